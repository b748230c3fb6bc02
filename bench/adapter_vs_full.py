"""Adapter cycle vs full cycle on the same simulated clicks (Quora duplicate questions, packaged MiniLM).

World (as bench/quora_cycle.py): for duplicate pairs of train_pool (raw rows), question1 is a user query and
question2 the document that answers it; other train_pool questions fill the corpus. Simulated users
(flywheel.lab.simulate's cascade model) search `--rounds` times per query and click/skip. To make 10k+ clicks
affordable on a 2-core box, the log is written in bulk with the rows `POST /search` writes (hits = exact
top 10 of the base vectors, the base query vector as float16 with each search), from the base embeddings
cached by bench/compare_losses.py; 10k searches over HTTP take ~1.5 h here. Events go through
`Service.feedback`, the same validation as `POST /feedback`.

Then the same data dir is copied and one cycle of each kind runs on it, against the base model:
- adapter: mining, cached vectors, training, evaluation, switch (must encode no document: asserted);
- full: fine-tune (capped at --full-max-minutes), re-embed the corpus, evaluation, swap.
Both results are then measured on the dev data: pair error on dev.jsonl.gz (question1 = query side,
question2 = document side; threshold on half, grouped; paired-bootstrap CI vs base) and nDCG@10 on
dev_retrieval (paired CI vs base).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/adapter_vs_full.py [--queries 6000 --rounds 2] [--skip-full]

Prints a table and writes bench/results/adapter_vs_full.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_losses import DATA, CachedEncoder, cached_embeddings, load_retrieval, read_jsonl  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(tempfile.gettempdir()) / "flywheel-bench-cache"


def build_world(n_queries: int, n_corpus: int, seed: int) -> tuple[dict, dict, dict, dict[str, int], list[str]]:
    """(queries, corpus, relevant, row of each key in the cached embeddings, the cached texts in order)."""
    rows = read_jsonl(DATA / "train_pool.jsonl.gz")
    raw = [r for r in rows if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    text: dict[str, str] = {}
    for r in raw:  # the same order as compare_losses.simulate_examples, so its cache is reused
        text.setdefault(r["qkey1"], r["question1"])
        text.setdefault(r["qkey2"], r["question2"])
    keys = list(text)
    positives = [r for r in raw if r["is_duplicate"]]
    random.Random(seed).shuffle(positives)
    queries, relevant = {}, {}
    for r in positives:
        if len(queries) == n_queries:
            break
        if r["qkey1"] in relevant or r["qkey2"] in queries or r["qkey1"] in {d for s in relevant.values() for d in s}:
            continue
        queries[r["qkey1"]] = r["question1"]
        relevant[r["qkey1"]] = {r["qkey2"]}
    corpus_ids = {d for ds in relevant.values() for d in ds}
    others = [k for k in keys if k not in queries and k not in corpus_ids]
    random.Random(seed + 1).shuffle(others)
    corpus_ids.update(others[: max(0, n_corpus - len(corpus_ids))])
    corpus = {k: text[k] for k in sorted(corpus_ids)}
    return queries, corpus, relevant, {k: i for i, k in enumerate(keys)}, [text[k] for k in keys]


def write_log(service: Any, world: tuple, emb: np.ndarray, rounds: int, seed: int) -> dict[str, int]:
    """Ingest the corpus with cached vectors and log simulated searches + feedback with the rows `POST /search`
    writes (searches with the base query vector, impressions), in bulk; events go through `Service.feedback`."""
    import pyarrow as pa

    from flywheel.lab.simulate import SimulationStats, UserModel, _behave
    from flywheel.serve.store import encode_vector
    from flywheel.types import Document, Event
    from flywheel.util.files import utcnow

    queries, corpus, relevant, row, _ = world
    ids = list(corpus)
    doc_vectors = emb[[row[d] for d in ids]]
    docs = [Document(d, corpus[d]) for d in ids]
    with service.store.transaction() as con:
        service.store.upsert_documents(con, docs)
    service.index.upsert("v1", docs, doc_vectors)
    user, rng, stats = UserModel(), random.Random(seed), SimulationStats()
    searches: dict[str, list] = {c: [] for c in ("search_id", "query", "query_vector")}
    impressions: dict[str, list] = {c: [] for c in ("search_id", "rank", "doc_id", "score")}
    events: list[Event] = []
    qids = list(queries)
    q_vectors = emb[[row[q] for q in qids]]
    scores_all = q_vectors @ doc_vectors.T
    top_all = np.argsort(-scores_all, axis=1)[:, : user.k]
    for r in range(rounds):
        for i, qid in enumerate(qids):
            search_id = f"s{r}-{qid}"
            hits = [{"doc_id": ids[j], "score": float(scores_all[i, j])} for j in top_all[i]]
            searches["search_id"].append(search_id)
            searches["query"].append(queries[qid])
            searches["query_vector"].append(encode_vector(q_vectors[i]))
            for rank, h in enumerate(hits, start=1):
                for key, value in (("search_id", search_id), ("rank", rank), ("doc_id", h["doc_id"])):
                    impressions[key].append(value)
                impressions["score"].append(h["score"])
            body = {"search_id": search_id, "hits": hits}
            for e in _behave(body, relevant[qid], user, rng, stats):
                events.append(Event(e["event_id"], e["search_id"], e["doc_id"], e["type"]))
            stats.searches += 1
    n = len(searches["search_id"])
    table = pa.table(
        {
            **searches,
            "ts": pa.array([utcnow()] * n, pa.timestamp("us")),
            "k": pa.array([user.k] * n, pa.int32()),
            "vector_version": ["v1"] * n,
        }
    )
    with service.store.transaction() as con:
        con.register("_s", table)
        con.register("_i", pa.table(impressions))
        con.execute(
            "INSERT INTO searches (search_id, ts, query, k, model_version, query_vector, vector_version) "
            "SELECT search_id, ts, query, k, 'v1', query_vector, vector_version FROM _s"
        ).fetchall()
        con.execute(
            "INSERT INTO impressions (search_id, rank, doc_id, score) SELECT search_id, rank, doc_id, score FROM _i"
        ).fetchall()
        con.unregister("_s")
        con.unregister("_i")
    for start in range(0, len(events), 5000):
        service.feedback(events[start : start + 5000])
    return {k: v for k, v in vars(stats).items() if k in ("searches", "clicks", "skips", "wrong_clicks", "abandoned")}


def dev_metrics(base_q: np.ndarray, cand_q: np.ndarray, cand_d: np.ndarray, base_d: np.ndarray, dev: list) -> dict:
    """Pair error on dev pairs (candidate vs base, paired CI)."""
    from flywheel.scoring.pair_error import compare_scored

    out = compare_scored(dev, (base_q * base_d).sum(1), (cand_q * cand_d).sum(1), seed=0)
    return {
        "base": out["incumbent"]["error_rate"],
        "error": out["candidate"]["error_rate"],
        "ci95": out["candidate"]["ci95"],
        "delta": out["delta_error"],
        "delta_ci95": out["delta_ci95"],
    }


def ndcg(query_vecs: np.ndarray, doc_vecs: np.ndarray, qids: list, doc_ids: list, relevant: dict) -> np.ndarray:
    """Per-query nDCG@10 (binary relevance) by exact search."""
    from flywheel.scoring.ranking import retrieval_scores

    class Fixed:
        def encode(self, texts: list[str], **_: Any) -> np.ndarray:
            return query_vecs[[int(t) for t in texts]]

    queries = {q: str(i) for i, q in enumerate(qids)}
    corpus = dict.fromkeys(doc_ids, "")
    scores = retrieval_scores(Fixed(), queries, corpus, relevant, 10, doc_vecs)
    order = {q: i for i, q in enumerate(scores["query_ids"])}
    return scores["ndcg@10"][[order[q] for q in qids if q in order]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--corpus", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--full-max-minutes", type=float, default=3.0, help="cap of the full fine-tune")
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "adapter_vs_full.json")
    args = parser.parse_args()

    from flywheel.config import Settings
    from flywheel.cycle.adapter import run_adapter_cycle
    from flywheel.cycle.full import run_cycle
    from flywheel.formats.pairs import load_labelled_pairs, pair_texts
    from flywheel.models.loading import load_model
    from flywheel.models.query_adapter import normalise
    from flywheel.scoring.pair_error import encode_normalized, paired_bootstrap
    from flywheel.serve.service import Service

    base_model = load_model("all-MiniLM-L6-v2", device="cpu")
    base = CachedEncoder(base_model)
    world = build_world(args.queries, args.corpus, args.seed)
    queries, corpus, relevant, _, pool_texts = world
    emb = cached_embeddings(base, pool_texts, CACHE)

    root = Path(tempfile.mkdtemp(prefix="flywheel-adapter-vs-full-"))
    common = {"base_model": "", "device": "cpu", "seed": args.seed, "train_max_minutes": args.full_max_minutes}
    settings = Settings(data_dir=root / "adapter", **common)
    t0 = time.perf_counter()
    service = Service.open(settings)
    sim = write_log(service, world, emb, args.rounds, args.seed)
    service.close()
    build_s = time.perf_counter() - t0
    shutil.copytree(root / "adapter", root / "full")
    print(f"world: {len(queries)} queries x {args.rounds}, {len(corpus)} documents, {sim} ({build_s:.0f} s)")

    results: dict[str, Any] = {
        "machine": "2 shared CPU cores (other jobs running), no GPU",
        "world": {"queries": len(queries), "rounds": args.rounds, "corpus": len(corpus), "simulation": sim},
        "cycles": {},
    }
    service = Service.open(settings)
    t0 = time.perf_counter()
    report = run_adapter_cycle(service, "adapter-cycle").to_json()
    wall = time.perf_counter() - t0
    assert report["counts"]["encoded_documents"] == 0, "an adapter cycle must encode no document"
    adapter = service.adapter
    service.close()
    results["cycles"]["adapter"] = _cycle_summary(report, wall, documents_encoded=0)
    print(f"adapter cycle: {report['decision']} in {wall:.1f} s {report['timings']}")

    dev = load_labelled_pairs(DATA / "dev.jsonl.gz")
    dev_texts = pair_texts(dev)
    dev_emb = cached_embeddings(base, dev_texts, CACHE)
    dev_row = {t: i for i, t in enumerate(dev_texts)}
    dq = dev_emb[[dev_row[p.query] for p in dev]]
    dd = dev_emb[[dev_row[p.document] for p in dev]]
    rq, rc, rrel = load_retrieval(DATA / "dev_retrieval")
    qids, doc_ids = list(rq), list(rc)
    rq_emb = cached_embeddings(base, [rq[q] for q in qids], CACHE)
    rc_emb = cached_embeddings(base, [rc[d] for d in doc_ids], CACHE)
    base_ndcg = ndcg(rq_emb, rc_emb, qids, doc_ids, rrel)

    def summarise(q: np.ndarray, d: np.ndarray, rq_v: np.ndarray, rc_v: np.ndarray) -> dict[str, Any]:
        per_query = ndcg(rq_v, rc_v, qids, doc_ids, rrel)
        mean, lo, hi = paired_bootstrap(base_ndcg, per_query, seed=0)
        return {
            "pair_error": dev_metrics(dq, q, d, dd, dev),
            "ndcg@10": {"base": float(base_ndcg.mean()), "value": float(per_query.mean()), "delta": mean},
            "ndcg_delta_ci95": [lo, hi],
        }

    results["dev"] = {"base": summarise(dq, dd, rq_emb, rc_emb)}
    # A rejected candidate's weights are discarded by the cycle: then there is nothing to measure.
    results["dev"]["adapter"] = summarise(adapter.apply(dq), dd, adapter.apply(rq_emb), rc_emb) if adapter else None

    if not args.skip_full:
        full_settings = Settings(data_dir=root / "full", **common)
        service = Service.open(full_settings)
        t0 = time.perf_counter()
        report = run_cycle(service, "full-cycle").to_json()
        wall = time.perf_counter() - t0
        candidate = report["candidate"]
        service.close()
        reembedded = "reembed" in report["timings"]  # a candidate rejected on pair error is never re-embedded
        results["cycles"]["full"] = _cycle_summary(report, wall, documents_encoded=len(corpus) if reembedded else 0)
        print(f"full cycle: {report['decision']} in {wall:.1f} s {report['timings']}")
        folder = full_settings.models_dir / candidate
        if (folder / "model.safetensors").exists() or any(folder.glob("*.safetensors")):
            model = load_model(str(folder), device="cpu")
            enc = lambda t: encode_normalized(model, t)  # noqa: E731
            full_dev = normalise(enc(dev_texts))
            fq = full_dev[[dev_row[p.query] for p in dev]]
            fd = full_dev[[dev_row[p.document] for p in dev]]
            results["dev"]["full"] = summarise(fq, fd, enc([rq[q] for q in qids]), enc([rc[d] for d in doc_ids]))
        else:
            results["dev"]["full"] = None  # weights discarded (rejected): nothing to measure
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    shutil.rmtree(root, ignore_errors=True)


def _cycle_summary(report: dict[str, Any], wall: float, documents_encoded: int) -> dict[str, Any]:
    pair = report["metrics"].get("pair_error") or {}
    retrieval = report["metrics"].get("retrieval") or {}
    return {
        "decision": report["decision"],
        "reasons": report.get("reasons"),
        "wall_s": round(wall, 1),
        "timings": report["timings"],
        "counts": report.get("counts"),
        "documents_encoded": documents_encoded,
        "heldout_pair_error": {k: (pair.get(k) or {}).get("error_rate") for k in ("incumbent", "candidate")},
        "heldout_delta_ci95": pair.get("delta_ci95"),
        "heldout_ndcg@10": retrieval.get("ndcg@10"),
        "training": {k: (report.get("training") or {}).get(k) for k in ("duration_s", "steps", "hyperparameters")},
    }


def print_table(results: dict[str, Any]) -> None:
    """The README table: one row per kind."""
    print(f"\n{results['machine']}; world {results['world']}")
    print(
        "| kind | cycle wall time | documents encoded | held-out pair error (inc -> cand) | dev pair error [95% CI] "
        "| dev delta vs base [CI] | dev nDCG@10 | nDCG delta vs base [CI] | decision |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ("base", "adapter", "full"):
        dev = results["dev"].get(kind)
        cycle = results["cycles"].get(kind, {})
        if dev is None and kind != "base":
            continue
        pe, nd, ci = dev["pair_error"], dev["ndcg@10"], dev["ndcg_delta_ci95"]
        held = cycle.get("heldout_pair_error") or {}
        held_s = f"{held['incumbent'] * 100:.1f}% -> {held['candidate'] * 100:.1f}%" if held.get("candidate") else "-"
        print(
            f"| {kind} | {cycle.get('wall_s', '-')} s | {cycle.get('documents_encoded', '-')} | {held_s} "
            f"| {pe['error'] * 100:.1f}% [{pe['ci95'][0] * 100:.1f}, {pe['ci95'][1] * 100:.1f}] "
            f"| {pe['delta'] * 100:+.1f} pt [{pe['delta_ci95'][0] * 100:+.1f}, {pe['delta_ci95'][1] * 100:+.1f}] "
            f"| {nd['value']:.3f} | {nd['delta']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] "
            f"| {cycle.get('decision', '-')} |"
        )


if __name__ == "__main__":
    main()
