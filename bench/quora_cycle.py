"""One real cycle on Quora duplicate questions, with clicks simulated from the duplicate labels.

World: for sampled duplicate pairs (question1 -> question2), question1 is a user query and question2 the
document that answers it; the question2 sides of the non-duplicate pairs of the same questions (Quora's
"related" questions: hard negatives) and other questions fill the corpus. Simulated users search through
the HTTP API and click/skip (flywheel.lab.simulate); then one cycle runs on the packaged MiniLM.

    .venv/bin/python bench/quora_cycle.py [--queries 3000] [--corpus 8000] [--pairs PATH]

Prints the cycle's numbers and writes bench/results/quora_cycle.json (the report path is in it).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = ROOT.parent / "shared" / "data" / "quora_duplicate_questions" / "train_pool.jsonl.gz"


def build_world(path: Path, n_queries: int, n_corpus: int, seed: int) -> tuple[dict, dict, dict]:
    """(queries, corpus, relevant) from a Quora pair file; ids are the question keys."""
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r.get("text_form", "raw") == "raw"]
    text = {}
    for r in rows:
        text[r["qkey1"]] = r["question1"]
        text[r["qkey2"]] = r["question2"]
    positives = [r for r in rows if r["is_duplicate"] == 1 and r["qkey1"] != r["qkey2"]]
    random.Random(seed).shuffle(positives)
    queries, relevant = {}, {}
    for r in positives:
        if len(queries) == n_queries:
            break
        if r["qkey1"] in relevant or r["qkey2"] in queries:
            continue
        queries[r["qkey1"]] = r["question1"]
        relevant[r["qkey1"]] = {r["qkey2"]}
    corpus_ids = {d for ds in relevant.values() for d in ds}
    hard = [r["qkey2"] for r in rows if r["is_duplicate"] == 0 and r["qkey1"] in queries]
    corpus_ids.update(h for h in hard if h not in queries)
    others = [k for k in text if k not in queries and k not in corpus_ids]
    random.Random(seed + 1).shuffle(others)
    corpus_ids.update(others[: max(0, n_corpus - len(corpus_ids))])
    return queries, {k: text[k] for k in sorted(corpus_ids)}, relevant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--corpus", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quora_cycle.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from fastapi.testclient import TestClient

    from flywheel.api.app import create_app
    from flywheel.config import Settings
    from flywheel.lab.simulate import simulate

    queries, corpus, relevant = build_world(args.pairs, args.queries, args.corpus, args.seed)
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="flywheel-quora-"))
    settings = Settings(data_dir=data_dir, train_max_minutes=20)
    timings = {}
    with TestClient(create_app(settings)) as api:
        t0 = time.perf_counter()
        docs = [{"id": k, "text": v} for k, v in corpus.items()]
        for start in range(0, len(docs), 500):
            api.post("/documents", json={"documents": docs[start : start + 500]}).raise_for_status()
        timings["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim = simulate(api, queries, relevant, seed=args.seed, progress=True)
        timings["simulate_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        cycle_id = api.post("/cycles", json={"mode": "full"}).json()["cycle_id"]
        while api.get(f"/cycles/{cycle_id}").json()["state"] in ("queued", "running"):
            time.sleep(2)
        timings["cycle_s"] = time.perf_counter() - t0
        report = api.get(f"/reports/{cycle_id}").json()

    pair = report["metrics"].get("pair_error") or {}
    retrieval = report["metrics"].get("retrieval") or {}
    result = {
        "world": {"queries": len(queries), "corpus": len(corpus)},
        "simulation": vars(sim),
        "timings": timings,
        "decision": report["decision"],
        "reasons": report.get("reasons"),
        "counts": report.get("counts"),
        "cycle_timings": report.get("timings"),
        "pair_error": pair,
        "retrieval": {k: v for k, v in retrieval.items() if "@" in k},
        "training": {
            k: (report.get("training") or {}).get(k) for k in ("duration_s", "steps", "device", "hyperparameters")
        },
        "report": str(settings.reports_dir / cycle_id / "report.html"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: result[k] for k in ("world", "decision", "reasons", "counts", "cycle_timings")}, indent=1))
    if pair:
        for side in ("incumbent", "candidate"):
            e = pair[side]
            lo, hi = (x * 100 for x in e["ci95"])
            print(f"pair error {side:<9} {e['error_rate'] * 100:5.1f}%  CI {lo:.1f}..{hi:.1f}")
        lo, hi = (x * 100 for x in pair["delta_ci95"])
        print(f"delta {pair['delta_error'] * 100:+.1f} pt, CI {lo:+.1f}..{hi:+.1f}")
    for name, m in result["retrieval"].items():
        lo, hi = m["ci95"]
        print(f"{name:<10} {m['incumbent']:.3f} -> {m['candidate']:.3f} ({m['delta']:+.3f}, CI {lo:+.3f}..{hi:+.3f})")
    print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
