"""ONNX Runtime's intra-op threads and spinning for serving: one query at a time and four at once, in one run.

The packaged MiniLM, exported to ONNX (fp32 and int8, as a server exports it), encodes the shipped Quora
retrieval queries through the product's `OnnxModel` from a pool of 1 or 4 worker threads (a server answers
overlapping searches on its search threads, all on one session). For each graph, each intra-op thread count
and ONNX Runtime's thread spinning on (its default) or off, one query at a time back to back, one at a time
with 1 ms between queries (how a server's searches arrive), and four at once. Each setting runs twice,
interleaved, so drift on shared cores shows as a difference between its two rows.

    .venv/bin/python bench/onnx_threads.py [--threads 1,2] [--queries 240]

Prints a table and writes bench/results/onnx_threads.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.search_latency import read_queries  # noqa: E402

PATTERNS = (("back to back", 1, 0.0), ("1 ms apart", 1, 0.001), ("4 at once", 4, 0.0))


def session(folder: Path, int8: bool, threads: int, spinning: bool) -> object:
    """The product's ONNX model with ONNX Runtime's intra-op threads and spinning set."""
    import onnxruntime as ort

    from flywheel.models.onnx import OnnxModel

    model = OnnxModel(folder, int8=int8, threads=threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    model.session = ort.InferenceSession(str(model.file), options, providers=["CPUExecutionProvider"])
    return model


def measure(model: object, queries: list[str], concurrency: int, gap_s: float) -> dict[str, float]:
    """p50/p95 of one query's encode and queries/s, from `concurrency` threads, `gap_s` between a thread's
    queries."""

    def encode(query: str) -> float:
        if gap_s:
            time.sleep(gap_s)
        started = time.perf_counter()
        model.encode([query])
        return (time.perf_counter() - started) * 1000

    for q in queries[:20]:
        model.encode([q])
    with cf.ThreadPoolExecutor(concurrency) as pool:
        started = time.perf_counter()
        times = list(pool.map(encode, queries))
        wall = time.perf_counter() - started
    p50, p95 = np.percentile(times, [50, 95])
    return {"p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3), "per_s": round(len(queries) / wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--queries", type=int, default=240)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "onnx_threads.json")
    args = parser.parse_args()
    from flywheel.models.export import export_model
    from flywheel.util.packaged import packaged_model_path

    queries = read_queries()[: args.queries]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "export"
        export_model(str(packaged_model_path()), folder, {"version": "packaged", "kind": "base"})
        models = {
            (int8, threads, spinning): session(folder, int8, threads, spinning)
            for int8 in (False, True)
            for threads in [int(t) for t in args.threads.split(",")]
            for spinning in (True, False)
        }
        for repeat in range(2):
            for (int8, threads, spinning), model in models.items():
                for pattern, concurrency, gap in PATTERNS:
                    rows.append(
                        {
                            "graph": "int8" if int8 else "fp32",
                            "threads": threads,
                            "spinning": spinning,
                            "pattern": pattern,
                            "repeat": repeat,
                            **measure(model, queries, concurrency, gap),
                        }
                    )
                    print(_line(rows[-1]), flush=True)
    order = {p: i for i, (p, _, _) in enumerate(PATTERNS)}
    print(HEADER)
    for r in sorted(rows, key=lambda r: (r["graph"], order[r["pattern"]], r["threads"], not r["spinning"])):
        print(_line(r))
    result = {"cpus": os.cpu_count(), "load": os.getloadavg(), "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


HEADER = "| graph | queries | intra-op threads | spinning | p50 ms | p95 ms | queries/s |\n" + "|---" * 7 + "|"


def _line(r: dict) -> str:
    spin = "on" if r["spinning"] else "off"
    return (
        f"| {r['graph']} | {r['pattern']} | {r['threads']} | {spin} | {r['p50_ms']:.2f} | {r['p95_ms']:.2f} | "
        f"{r['per_s']:.0f} |"
    )


if __name__ == "__main__":
    main()
