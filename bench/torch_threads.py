"""torch's intra-op threads for serving: one query at a time and four at once, for each thread count, in one run.

The packaged MiniLM encodes the shipped Quora retrieval queries on the CPU through sentence-transformers, from
a pool of 1 or 4 worker threads (a server answers overlapping requests on worker threads). Each setting runs
twice, interleaved, so drift on shared cores shows as a difference between its two rows.

    .venv/bin/python bench/torch_threads.py [--threads 1,2] [--queries 240]

Prints a table and writes bench/results/torch_threads.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.search_latency import read_queries  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default=f"1,{os.cpu_count()}")
    parser.add_argument("--queries", type=int, default=240)
    args = parser.parse_args()
    import torch

    from flywheel.models.loading import load_model
    from flywheel.util.packaged import packaged_model_path

    model = load_model(packaged_model_path(), "cpu")
    queries = read_queries()[: args.queries]

    def encode(query: str) -> float:
        started = time.perf_counter()
        model.encode([query], show_progress_bar=False)
        return (time.perf_counter() - started) * 1000

    rows = []
    counts = [int(t) for t in args.threads.split(",")]
    for _ in range(2):
        for threads in counts:
            torch.set_num_threads(threads)
            for concurrency in (1, 4):
                with cf.ThreadPoolExecutor(concurrency) as pool:
                    started = time.perf_counter()
                    times = list(pool.map(encode, queries))
                    wall = time.perf_counter() - started
                p50, p95 = np.percentile(times, [50, 95])
                rows.append(
                    {
                        "threads": threads,
                        "concurrency": concurrency,
                        "p50_ms": round(float(p50), 2),
                        "p95_ms": round(float(p95), 2),
                        "per_s": round(len(queries) / wall, 1),
                    }
                )
    print("| torch threads | concurrent queries | p50 ms | p95 ms | queries/s |\n|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["threads"])):
        print(f"| {r['threads']} | {r['concurrency']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['per_s']:.0f} |")
    out = ROOT / "bench" / "results" / "torch_threads.json"
    out.write_text(json.dumps({"cpus": os.cpu_count(), "load": os.getloadavg(), "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
