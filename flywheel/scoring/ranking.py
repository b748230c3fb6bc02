"""Retrieval metrics (MRR@k, nDCG@k, Recall@k) by exact search, and a paired comparison of two models."""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.scoring.pair_error import Encoder, encode_normalized, paired_bootstrap


def retrieval_scores(
    model: Encoder,
    queries: dict[str, str],
    corpus: dict[str, str],
    relevant: dict[str, set[str]],
    k: int = 10,
    corpus_embeddings: np.ndarray | None = None,
    candidates: dict[str, list[str] | None] | None = None,
) -> dict[str, np.ndarray]:
    """Per-query MRR@k, nDCG@k and Recall@k (binary relevance) from exact dot-product search.

    Only queries that have text and at least one relevant document present in `corpus` are scored;
    relevant ids missing from the corpus are ignored so that they cannot silently cap recall.

    With `candidates`, each query ranks only its own candidate documents (a condensed list, Sakai 2007): the
    documents its logged feedback judged. Documents nobody was shown carry no judgement, so a model that
    ranks them high is neither credited nor blamed for it.

    Args:
        model: The encoder.
        queries: Query id -> text.
        corpus: Document id -> text.
        relevant: Query id -> relevant document ids.
        k: Cut-off.
        corpus_embeddings: Precomputed corpus embeddings in `list(corpus)` order (e.g. from the index).
        candidates: Query id -> the document ids to rank, or None for the whole corpus (default: the whole
            corpus for every query; a query left out ranks nothing).

    Returns:
        {"query_ids": ids (sorted), f"mrr@{k}", f"ndcg@{k}", f"recall@{k}": float arrays aligned to them}.
    """
    if k < 1:
        raise InvalidInput(f"k must be at least 1, got {k}")
    doc_ids = list(corpus)
    doc_row = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    qids = sorted(q for q in queries if any(d in doc_row for d in relevant.get(q, ())))
    if not qids or not doc_ids:
        raise InvalidInput("no query has a relevant document in the corpus")
    if corpus_embeddings is None:
        doc_emb = encode_normalized(model, [corpus[d] for d in doc_ids])
    else:
        doc_emb = np.asarray(corpus_embeddings, dtype=np.float32)
        if doc_emb.shape[0] != len(doc_ids):
            raise InvalidInput(f"corpus_embeddings has {doc_emb.shape[0]} rows for {len(doc_ids)} documents")
        doc_emb = doc_emb / np.maximum(np.linalg.norm(doc_emb, axis=1, keepdims=True), 1e-12)
    query_emb = encode_normalized(model, [queries[q] for q in qids])
    if query_emb.shape[1] != doc_emb.shape[1]:
        raise InvalidInput(f"query vectors have {query_emb.shape[1]} dims, corpus vectors {doc_emb.shape[1]}")
    whole = [i for i, q in enumerate(qids) if candidates is None or (q in candidates and candidates[q] is None)]
    top = np.full((len(qids), k), -1, dtype=np.int64)
    if whole:
        top[whole, : min(k, len(doc_ids))] = _top_k(query_emb[whole], doc_emb, min(k, len(doc_ids)))
    if candidates is not None:
        some = [i for i in range(len(qids)) if candidates.get(qids[i], ()) is not None]
        rows = [[doc_row[d] for d in candidates.get(qids[i]) or () if d in doc_row] for i in some]
        if some:
            top[some] = _top_in(query_emb[some], doc_emb, rows, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    mrr, ndcg, recall = (np.zeros(len(qids)) for _ in range(3))
    for i, qid in enumerate(qids):
        rel_rows = np.array(sorted({doc_row[d] for d in relevant[qid] if d in doc_row}))
        hits = np.isin(top[i], rel_rows)
        if hits.any():
            mrr[i] = 1.0 / (int(np.argmax(hits)) + 1)
        ndcg[i] = (hits * discounts[: hits.size]).sum() / discounts[: min(rel_rows.size, k)].sum()
        recall[i] = hits.sum() / rel_rows.size
    metrics = {f"mrr@{k}": mrr, f"ndcg@{k}": ndcg, f"recall@{k}": recall}
    return {"query_ids": np.array(qids, dtype=object), **metrics}


def _top_in(query_emb: np.ndarray, doc_emb: np.ndarray, rows: list[list[int]], k: int) -> np.ndarray:
    """Per query, its candidate rows best first, padded with -1 to k (no document sits at a padded rank)."""
    out = np.full((query_emb.shape[0], k), -1, dtype=np.int64)
    for i, cand in enumerate(rows):
        if cand:
            scores = doc_emb[cand] @ query_emb[i]
            best = np.asarray(cand)[np.argsort(-scores, kind="stable")][:k]
            out[i, : len(best)] = best
    return out


def _top_k(query_emb: np.ndarray, doc_emb: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the k best documents per query, best first (chunked to bound the score matrix)."""
    chunk = max(1, 4_000_000 // max(1, doc_emb.shape[0]))
    out = np.empty((query_emb.shape[0], k), dtype=np.int64)
    for start in range(0, query_emb.shape[0], chunk):
        scores = query_emb[start : start + chunk] @ doc_emb.T
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        out[start : start + chunk] = np.take_along_axis(part, order, axis=1)
    return out


def compare_retrieval(
    incumbent: Encoder,
    candidate: Encoder,
    queries: dict[str, str],
    corpus: dict[str, str],
    relevant: dict[str, set[str]],
    k: int = 10,
    n_boot: int = 1000,
    seed: int = 0,
    incumbent_corpus_embeddings: np.ndarray | None = None,
) -> dict[str, Any]:
    """Mean retrieval metrics of two models and a paired-bootstrap CI of each difference.

    Args:
        incumbent: The serving model.
        candidate: The challenger.
        queries: Query id -> text.
        corpus: Document id -> text.
        relevant: Query id -> relevant document ids.
        k: Cut-off.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.
        incumbent_corpus_embeddings: The serving index's vectors in `list(corpus)` order, to skip re-encoding.

    Returns:
        {"k", "n_queries", "incumbent": {metric: mean}, "candidate": {metric: mean},
        "delta": {metric: {"mean": cand - inc, "ci95": [lo, hi]}}}.
    """
    inc = retrieval_scores(incumbent, queries, corpus, relevant, k, incumbent_corpus_embeddings)
    cand = retrieval_scores(candidate, queries, corpus, relevant, k)
    return {"k": k, **compare_scores(inc, cand, n_boot, seed)}


def compare_scores(
    inc: dict[str, np.ndarray], cand: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Means of two models' per-query metrics (as `retrieval_scores` returns them) and paired CIs of each change.

    Returns:
        {"n_queries", "delta": {metric: {"mean", "ci95"}}, "incumbent": {metric: mean}, "candidate": {...}}.
    """
    metrics = [name for name in inc if name != "query_ids"]
    delta = {}
    for name in metrics:
        mean, lo, hi = paired_bootstrap(inc[name], cand[name], n_boot, seed)
        delta[name] = {"mean": mean, "ci95": [lo, hi]}
    return {
        "n_queries": int(inc["query_ids"].size),
        "delta": delta,
        "incumbent": {name: float(inc[name].mean()) for name in metrics},
        "candidate": {name: float(cand[name].mean()) for name in metrics},
    }
