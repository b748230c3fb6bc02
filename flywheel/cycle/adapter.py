"""The adapter cycle: mine → split → read cached vectors → train a query adapter → evaluate → gate → switch.

The same mining, held-out split, metrics, gate and report as the full cycle (`flywheel.cycle.full`), but nothing
is fine-tuned and nothing is re-embedded: query vectors come from the search log (`searches.query_vector`,
written by the serving path), document vectors from the base version's Qdrant collection. Only queries
logged without a vector (before migration 3, or under another base) are encoded, and counted in the report.
Promotion switches the query transform under the serving lock; the alias stays on the base collection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.config import Settings
from flywheel.cycle.debias import click_weights
from flywheel.cycle.evaluation import Scorer, filter_restrictions, heldout_queries, next_traffic_view, unseen_view
from flywheel.cycle.gate import gate_checks, golden_check
from flywheel.cycle.mining import Pair, write_snapshot
from flywheel.cycle.online import run_online_test
from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.split import labelled
from flywheel.cycle.steps import (
    K,
    finish_report,
    gate,
    mine_and_split,
    new_report,
    settle_decision,
    settle_failure,
    split_counts,
    stage_timer,
)
from flywheel.errors import InvalidInput
from flywheel.formats.pairs import load_labelled_pairs
from flywheel.learn.query_adapter import AdapterConfig, rotate_negatives, train_adapter
from flywheel.learn.query_memory import MemoryConfig, build_memory
from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter, normalise
from flywheel.models.registry import ModelVersion
from flywheel.scoring.pair_error import compare_scored
from flywheel.scoring.ranking import retrieval_scores
from flywheel.serve.service import Service
from flywheel.types import LabelledPair
from flywheel.util.files import now_iso

log = logging.getLogger(__name__)


def adapter_config(settings: Settings) -> AdapterConfig:
    """The AdapterConfig a cycle uses, from settings (unset values keep the measured defaults)."""
    config = AdapterConfig(seed=settings.seed)
    for name in ("loss", "epochs", "learning_rate", "scale", "identity_weight", "negatives"):
        value = getattr(settings, f"adapter_{name}")
        if value is not None:
            setattr(config, name, value)
    return config


def memory_config(settings: Settings) -> MemoryConfig:
    """The MemoryConfig a cycle uses, from settings."""
    return MemoryConfig(threshold=settings.memory_threshold, max_entries=settings.memory_max_entries)


@dataclass
class CachedVectors:
    """Base-model vectors of one base version: queries by text, documents by id, and what had to be encoded."""

    base: str
    queries: dict[str, np.ndarray]
    doc_ids: list[str]
    docs: np.ndarray
    doc_row: dict[str, int] = field(default_factory=dict)
    logged_queries: int = 0
    encoded_queries: int = 0
    encoded_documents: int = 0

    def query_matrix(self, texts: list[str]) -> np.ndarray:
        """Vectors of these query texts (all must be cached)."""
        return np.stack([self.queries[t] for t in texts]) if texts else np.zeros((0, self.docs.shape[1]), np.float32)


def gather_vectors(
    service: Service, encoder: Encoder, pairs: list[Pair], more_queries: Iterable[str] = ()
) -> CachedVectors:
    """Logged query vectors and the base collection's document vectors; encode only what is missing.

    Args:
        service: the open Service.
        encoder: the base encoder (its version names the vectors and the collection).
        pairs: the mined pairs whose queries and documents are needed.
        more_queries: other query texts needed (the next-traffic searches).
    """
    texts = {p.query for p in pairs} | set(more_queries)
    queries = service.store.query_vectors(encoder.version, texts)
    logged = len(queries)
    missing = sorted(texts - queries.keys())
    if missing:
        log.info("%d queries have no logged %s vector; encoding them", len(missing), encoder.version)
        queries.update(zip(missing, encoder.encode(missing), strict=True))
    ids, docs = service.index.all_vectors(encoder.version, encoder.dimension)
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    absent = {p.doc_id: p.doc_text for p in pairs if p.doc_id not in row}
    if absent:  # only if the collection lags the store (it is repaired at start-up)
        ids.extend(absent)
        docs = np.concatenate([docs, encoder.encode(list(absent.values()))])
        row = {doc_id: i for i, doc_id in enumerate(ids)}
    docs = normalise(docs)
    return CachedVectors(encoder.version, queries, ids, docs, row, logged, len(missing), len(absent))


@dataclass
class TrainingArrays:
    """What the learners train on, as rows into the cached vectors."""

    queries: np.ndarray  # (n_queries, dim) base vectors of the training queries
    examples: np.ndarray  # (n, 3) query row, clicked doc row, skipped doc row or -1
    pairs: np.ndarray  # (m, 3) query row, doc row, label
    popularity: np.ndarray  # (n_queries,) searches per query (what a bounded memory keeps)
    click_ranks: np.ndarray  # (n,) mean rank each example's click was shown at (for debiasing)
    votes: np.ndarray  # (m,) per row of `pairs`: its clicks when clicked, else its negative votes (at least 1)


def training_arrays(rows: list[Pair], cache: CachedVectors) -> TrainingArrays:
    """The learners' inputs from the training-side pairs.

    Each clicked document of a query group is one example; the group's skipped documents take turns as
    its hard negative.
    """
    texts = sorted({r.query for r in rows})
    q_row = {t: i for i, t in enumerate(texts)}
    pairs = [(q_row[r.query], cache.doc_row[r.doc_id], r.label) for r in rows]
    votes = np.array([max(1, r.positive_votes if r.label else r.negative_votes) for r in rows], np.float32)
    popularity = np.zeros(len(texts), np.int64)
    rank_of: dict[tuple[int, int], float] = {}
    for r in rows:
        popularity[q_row[r.query]] = max(popularity[q_row[r.query]], r.searches)
        rank_of[(q_row[r.query], cache.doc_row[r.doc_id])] = r.click_rank
    examples = rotate_negatives(pairs)
    click_ranks = np.array([rank_of.get((int(q), int(d)), 1.0) or 1.0 for q, d, _ in examples], np.float64)
    return TrainingArrays(
        cache.query_matrix(texts),
        examples,
        np.asarray(pairs, dtype=np.int64).reshape(-1, 3),
        popularity,
        click_ranks,
        votes.reshape(-1),
    )


def train_learner(
    arrays: TrainingArrays,
    cache: CachedVectors,
    settings: Settings,
    version: str,
    weights: np.ndarray | None = None,
) -> tuple[QueryAdapter, dict[str, Any]]:
    """Train what `adapter_learner` names: the linear map, the query memory, or both.

    Args:
        arrays: the training-side rows.
        cache: the cached base vectors.
        settings: adapter_learner, adapter_* and memory_* settings.
        version: the candidate's version.
        weights: per example of `arrays`, e.g. inverse propensity (None: all 1).

    Returns:
        (the candidate QueryAdapter, the report's training section).
    """
    learner = settings.adapter_learner
    started = time.monotonic()
    dim = cache.docs.shape[1]
    training: dict[str, Any] = {"learner": learner}
    weight, bias = np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32)
    if learner in ("adapter", "adapter+memory"):
        config = adapter_config(settings)
        result = train_adapter(arrays.queries, cache.docs, arrays.examples, arrays.pairs, config, weights)
        weight, bias = result.weight, result.bias
        training.update(result.to_dict())
    memory = None
    if learner in ("memory", "adapter+memory"):
        config = memory_config(settings)
        # Each click is a vote (Rocchio over clicks): a document clicked by 30 users outweighs one misclick.
        memory = build_memory(arrays.queries, cache.docs, arrays.pairs, config, arrays.votes, arrays.popularity)
        training["memory"] = {**config.to_dict(), "entries": memory.size}
        training.setdefault("hyperparameters", {})["memory"] = config.to_dict()
    training["duration_s"] = round(time.monotonic() - started, 3)
    return QueryAdapter(version, cache.base, weight, bias, memory), training


def run_adapter_cycle(service: Service, cycle_id: str, on_stage: Callable[[str], None] = lambda _: None) -> CycleReport:
    """Run one adapter cycle on an open Service and write its report; never raises for a failed cycle.

    Args:
        service: the open Service (owner of the data dir).
        cycle_id: the id the report is filed under.
        on_stage: called with each stage's name.

    Returns:
        The report (kind "adapter"), with `decision` one of "promoted", "rejected", "failed".
    """
    settings = service.settings
    started = time.monotonic()
    timings: dict[str, float] = {}
    encoder, current = service.encoder, service.adapter
    report = new_report(service, cycle_id, "adapter", base=encoder.version)
    timed = stage_timer(timings, on_stage)

    try:
        done = timed("mine")
        mined, train_rows, heldout_rows = mine_and_split(service, encoder, report)
        write_snapshot(mined, settings.cycles_dir / cycle_id / "pairs.parquet")
        done()

        done = timed("vectors")
        cache = gather_vectors(service, encoder, mined.pairs, (s.query for s in mined.next_traffic))
        arrays = training_arrays(train_rows, cache)
        report.counts = {
            **split_counts(mined.counts, train_rows, heldout_rows, len(arrays.examples)),
            "query_vectors_needed": len(cache.queries),  # mined queries and next-traffic searches
            "logged_query_vectors": cache.logged_queries,
            "encoded_queries": cache.encoded_queries,
            "encoded_documents": cache.encoded_documents,
            "document_vectors_read": len(cache.doc_ids) - cache.encoded_documents,
        }
        done()

        done = timed("train")
        version, folder = service.registry.allocate()
        report.candidate = version
        weights, propensity = None, None
        if settings.adapter_debias and settings.adapter_learner != "memory":
            weights, propensity = click_weights(service.store, mined, arrays.click_ranks, settings.default_k)
        candidate, training = train_learner(arrays, cache, settings, version, weights)
        training["propensity"] = propensity
        candidate.save(folder)
        service.registry.save(
            ModelVersion(
                version=version,
                kind="adapter",
                base_model=service.registry.get(encoder.version).base_model,
                created_at=now_iso(),
                dimension=candidate.dimension,
                parent=encoder.version,
                made_by={
                    "how": f"{settings.adapter_learner} trained on logged vectors of mined feedback pairs",
                    "cycle_id": cycle_id,
                    "base_version": encoder.version,
                    "replaces": service.serving_version,
                    "window": report.window.model_dump() if report.window else None,
                    "pairs": len(train_rows),
                    "examples": len(arrays.examples),
                    "hyperparameters": training.get("hyperparameters", {}),
                    "device": "cpu",
                    "duration_s": training["duration_s"],
                    "weights": "adapter.safetensors (weight: dim x dim, bias: dim; memory_keys, memory_shifts: "
                    "m x dim); y = memory(normalise(W x + b))",
                },
            )
        )
        report.training = training
        done()

        done = timed("evaluate")
        inc_side = AdaptedQueries(encoder.version, cache.query_matrix, current)
        cand_side = AdaptedQueries(encoder.version, cache.query_matrix, candidate)
        heldout = labelled(heldout_rows)
        doc_vectors = cache.docs[[cache.doc_row[p.doc_id] for p in heldout_rows]] if heldout_rows else None
        scores = [
            (side.encode([p.query for p in heldout_rows]) * doc_vectors).sum(1) if heldout_rows else np.zeros(0)
            for side in (inc_side, cand_side)
        ]
        report.metrics.pair_error = _pair_error(heldout, scores, settings.seed)
        score = _scorer(cache, {"incumbent": inc_side, "candidate": cand_side})
        groups, searches = filter_restrictions(mined, lambda f: service.index.matching_ids(encoder.version, f))
        views = {
            "unseen": unseen_view(score, heldout_rows, train_rows, settings.seed, mined.shown, groups)
            if cache.doc_ids
            else None,
            "next_traffic": next_traffic_view(score, mined.next_traffic, train_rows, settings.seed, searches),
        }
        report.metrics.retrieval, report.metrics.next_traffic = views["unseen"], views["next_traffic"]
        checks = gate_checks(report.metrics.pair_error, len(heldout), views, settings)
        if settings.golden_pairs:
            golden = load_labelled_pairs(settings.golden_pairs)
            report.metrics.golden = _golden(encoder, current, candidate, golden, settings.seed)
            checks.append(golden_check(report.metrics.golden, settings))
        report.examples = _changed(service, cache, inc_side, cand_side, *heldout_queries(heldout_rows))
        done()

        decision = gate(report, checks, started, settings)
        # Same encoder and collection: promotion switches only the query transform.
        swap = lambda: service.swap(encoder, adapter=candidate)  # noqa: E731
        online = None
        if settings.online_test != "off":
            online = lambda: run_online_test(service, report, version, encoder, candidate)  # noqa: E731
        settle_decision(service, report, version, decision.promote, timed, swap, online)
    except Exception as exc:
        log.exception("adapter cycle %s failed", cycle_id)
        settle_failure(service, report, exc)
    return finish_report(service, report, timings, started)


def _pair_error(heldout: list[LabelledPair], scores: list[np.ndarray], seed: int) -> dict[str, Any] | None:
    """The held-out pair error of both sides, or None where the pairs cannot support a threshold fit."""
    if len(heldout) < 4 or {p.label for p in heldout} != {0, 1}:
        return None
    try:
        return compare_scored(heldout, *scores, seed)
    except InvalidInput as exc:  # e.g. one class only on the calibration side
        log.warning("pair error not measurable: %s", exc)
        return None


def _golden(
    encoder: Encoder, current: QueryAdapter | None, candidate: QueryAdapter, golden: list[LabelledPair], seed: int
) -> dict[str, Any] | None:
    """Pair error of incumbent and candidate adapters on the user's golden pairs (their texts are encoded)."""
    texts = sorted({p.query for p in golden} | {p.document for p in golden})
    vectors = dict(zip(texts, normalise(encoder.encode(texts)), strict=True))
    q = np.stack([vectors[p.query] for p in golden])
    d = np.stack([vectors[p.document] for p in golden])
    scores = [(a.apply(q) if a is not None else q) * d for a in (current, candidate)]
    return compare_scored(golden, scores[0].sum(1), scores[1].sum(1), seed)


def _scorer(cache: CachedVectors, sides: dict[str, AdaptedQueries]) -> Scorer:
    """Per-query nDCG/MRR/Recall@10 of each side over the whole base collection, from cached vectors."""
    corpus = dict.fromkeys(cache.doc_ids, "")  # only the ids are used: vectors come from the collection

    def score(
        side: str, queries: dict[str, str], relevant: dict[str, set[str]], judged: dict | None = None
    ) -> dict[str, np.ndarray]:
        return retrieval_scores(sides[side], queries, corpus, relevant, K, cache.docs, judged)

    return score


def _changed(
    service: Service,
    cache: CachedVectors,
    incumbent: AdaptedQueries,
    candidate: AdaptedQueries,
    queries: dict[str, str],
    relevant: dict[str, set[str]],
) -> list[dict[str, Any]]:
    """Up to 8 held-out queries whose top 3 changed, before and after, for the reviewer."""
    items = list(queries.items())[:200]
    if not items or not cache.doc_ids:
        return []
    texts = [q for _, q in items]
    tops = [np.argsort(-(side.encode(texts) @ cache.docs.T), axis=1)[:, :3] for side in (incumbent, candidate)]
    changed = [i for i in range(len(items)) if list(tops[0][i]) != list(tops[1][i])][:8]
    needed = sorted({cache.doc_ids[j] for i in changed for top in tops for j in top[i]})
    text = service.store.document_texts(needed)

    def hits(row: np.ndarray) -> list[dict[str, str]]:
        return [{"doc_id": cache.doc_ids[j], "text": text.get(cache.doc_ids[j], "")} for j in row]

    return [
        {
            "query": items[i][1],
            "relevant": sorted(relevant[items[i][0]]),
            "before": hits(tops[0][i]),
            "after": hits(tops[1][i]),
        }
        for i in changed
    ]


__all__ = [
    "CachedVectors",
    "adapter_config",
    "gather_vectors",
    "run_adapter_cycle",
]
