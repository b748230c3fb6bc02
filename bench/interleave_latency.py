"""What an online test costs a search: `POST /search` latency with no test, with an interleaved adapter candidate
(one more query transform and index query), with an interleaved fine-tuned candidate (a second encode and a
query on its own collection), and in shadow mode, all in one run through the real app.

The corpus is the shipped SciFact abstracts (5,183, vectors from the bench cache, as `bench/learners.py`); the
queries its claims; the encoder the packaged MiniLM on torch. The fine-tuned candidate is a second copy of the
same model under another version with its own collection (the cost of a real one of the same size). The four
conditions take turns search by search (ABCD ABCD ...), so machine noise falls on all of them alike, and the
table gives each one's median and p95 and its median relative to the plain search.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/interleave_latency.py [--searches 300]

Prints a table and writes bench/results/interleave_latency.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from learners import RESULTS, base_vectors  # noqa: E402

from flywheel.api.app import create_app  # noqa: E402
from flywheel.config import Settings  # noqa: E402
from flywheel.lab.worlds import load_world  # noqa: E402
from flywheel.models.encoder import Encoder  # noqa: E402
from flywheel.models.loading import load_model  # noqa: E402
from flywheel.models.query_adapter import QueryAdapter  # noqa: E402
from flywheel.serve.experiment import Experiment  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

CONDITIONS = ("plain", "interleaved adapter", "interleaved fine-tune", "shadow fine-tune")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--searches", type=int, default=300, help="searches per condition")
    args = parser.parse_args()
    world = load_world("scifact")
    model_path = packaged_model_path()
    vec = base_vectors(world, load_model(model_path, "cpu"))
    queries = list({**world.traffic_queries, **world.check_queries}.values())
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", base_model=model_path, device="cpu")
        with TestClient(create_app(settings)) as api:
            service = api.app.state.service
            docs = np.stack([vec[d.text] for d in world.corpus])
            with service.store.transaction() as con:
                service.store.upsert_documents(con, list(world.corpus))
            service.index.upsert("v1", list(world.corpus), docs)
            base = service.encoder
            rng = np.random.default_rng(0)
            dim = base.dimension
            adapter = QueryAdapter(
                "v2",
                "v1",
                np.eye(dim, dtype=np.float32) + rng.normal(0, 0.05, (dim, dim)).astype(np.float32),
                np.zeros(dim, np.float32),
            )
            twin = Encoder("v3", load_model(model_path, "cpu"), settings.encode_batch_size)
            service.index.create("v3", dim)
            service.index.upsert("v3", list(world.corpus), docs)
            experiments = {
                "plain": None,
                "interleaved adapter": Experiment("bench-a", "interleave", "v2", base, adapter, fraction=1.0),
                "interleaved fine-tune": Experiment("bench-f", "interleave", "v3", twin, None, fraction=1.0),
                "shadow fine-tune": Experiment("bench-s", "shadow", "v3", twin, None, fraction=1.0),
            }
            for q in queries[:20]:  # warm up every path
                for experiment in experiments.values():
                    _search(api, service, experiment, q)
            times: dict[str, list[float]] = {c: [] for c in CONDITIONS}
            for i in range(args.searches):
                q = queries[(20 + i) % len(queries)]
                for name in CONDITIONS:
                    times[name].append(_search(api, service, experiments[name], q))
    plain = float(np.median(times["plain"]))
    rows = []
    for name in CONDITIONS:
        ms = np.array(times[name])
        rows.append(
            {
                "condition": name,
                "p50_ms": round(float(np.median(ms)), 2),
                "p95_ms": round(float(np.percentile(ms, 95)), 2),
                "relative_p50": round(float(np.median(ms)) / plain, 2),
            }
        )
    print(f"POST /search through the app (TestClient), SciFact 5,183 abstracts, MiniLM torch, {args.searches} each")
    print("| condition | p50 ms | p95 ms | p50 / plain |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['condition']} | {r['p50_ms']} | {r['p95_ms']} | {r['relative_p50']}x |")
    RESULTS.mkdir(exist_ok=True)
    out = {"searches": args.searches, "documents": len(world.corpus), "rows": rows}
    (RESULTS / "interleave_latency.json").write_text(json.dumps(out, indent=2) + "\n")


def _search(api: TestClient, service: object, experiment: Experiment | None, query: str) -> float:
    """One timed POST /search with `experiment` running (None: no test); milliseconds."""
    if experiment is not None:
        service.start_experiment(experiment)
    try:
        started = time.perf_counter()
        response = api.post("/search", json={"query": query, "k": 10})
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        if experiment is not None:
            service.end_experiment(experiment)
    response.raise_for_status()
    return elapsed


if __name__ == "__main__":
    main()
