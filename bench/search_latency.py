"""Search latency through HTTP (`flywheel serve` in its own process) vs the raw baseline in one process.

The baseline is the least any search can cost: sentence-transformers encode + qdrant-client query_points on
the very same local-mode collection the server built (opened after the server stops), no HTTP, no logging.
The ratio says what the API adds (HTTP, validation, the DuckDB search log that makes feedback possible).
Documents are distinct Quora questions (train pool + dev when /work/shared is there, else the shipped dev
corpus); queries are the dev_retrieval queries. Embedding 50k documents on CPU takes several minutes, so
choose sizes with --sizes; nothing is cached.

    .venv/bin/python bench/search_latency.py [--sizes 10000,50000] [--queries 300]

Prints a table and writes bench/results/search_latency.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "flywheel" / "data" / "quora" / "dev_retrieval"
SHARED = Path("/work/shared/data/quora_duplicate_questions")


def _read_jsonl_gz(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {f"p{p}": float(np.percentile(arr, p)) for p in (50, 95, 99)} | {"mean": float(arr.mean())}


def run_api(docs: list[dict], queries: list[str], data_dir: Path) -> dict:
    """Ingest through HTTP, then time single searches one after another (the chatbot's pattern)."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLYWHEEL_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "flywheel", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        http = httpx.Client(base_url=url, timeout=120)
        for _ in range(600):
            try:
                if http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        t0 = time.perf_counter()
        for start in range(0, len(docs), 500):
            batch = [{"id": d["_id"], "text": d["text"]} for d in docs[start : start + 500]]
            http.post("/documents", json={"documents": batch}).raise_for_status()
        ingest_s = time.perf_counter() - t0
        for q in queries[:10]:  # warm-up
            http.post("/search", json={"query": q, "k": 10})
        times = []
        t0 = time.perf_counter()
        for q in queries:
            s = time.perf_counter()
            http.post("/search", json={"query": q, "k": 10}).raise_for_status()
            times.append((time.perf_counter() - s) * 1000)
        wall = time.perf_counter() - t0
        return {
            "latency_ms": _percentiles(times),
            "rps": len(queries) / wall,
            "ingest_docs_per_s": len(docs) / ingest_s,
        }
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def run_raw(queries: list[str], qdrant_dir: Path, collection: str = "documents") -> dict:
    """Encode + query_points in one process on the server's collection: the floor under any search API."""
    from qdrant_client import QdrantClient
    from sentence_transformers import SentenceTransformer

    from flywheel.util.packaged import packaged_model_path

    model = SentenceTransformer(packaged_model_path(), device="cpu")
    client = QdrantClient(path=str(qdrant_dir))
    for q in queries[:10]:
        client.query_points(collection, query=model.encode(q, normalize_embeddings=True).tolist(), limit=10)
    times, encode_times = [], []
    t0 = time.perf_counter()
    for q in queries:
        s = time.perf_counter()
        vec = model.encode(q, normalize_embeddings=True)
        encode_times.append((time.perf_counter() - s) * 1000)
        client.query_points(collection, query=vec.tolist(), limit=10, with_payload=True)
        times.append((time.perf_counter() - s) * 1000)
    wall = time.perf_counter() - t0
    client.close()
    return {"latency_ms": _percentiles(times), "encode_ms": _percentiles(encode_times), "rps": len(queries) / wall}


def distinct_questions(limit: int) -> list[dict]:
    """Up to `limit` distinct question texts as documents, from the shared pool or the shipped corpus."""
    if (SHARED / "train_pool.jsonl.gz").exists():
        texts: dict[str, None] = {}
        for name in ("dev.jsonl.gz", "train_pool.jsonl.gz"):
            for row in _read_jsonl_gz(SHARED / name):
                texts.update(dict.fromkeys((row["question1"], row["question2"])))
        return [{"_id": f"q{i}", "text": t} for i, t in enumerate(list(texts)[:limit])]
    return _read_jsonl_gz(DATA / "corpus.jsonl.gz")[:limit]


def read_queries() -> list[str]:
    """The dev_retrieval queries (shared copy if present, else the shipped one)."""
    shared = SHARED / "dev_retrieval" / "queries.jsonl"
    if shared.exists():
        return [json.loads(line)["text"] for line in shared.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [q["text"] for q in _read_jsonl_gz(DATA / "queries.jsonl.gz")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000", help="corpus sizes (documents), comma-separated")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_latency.json")
    args = parser.parse_args()

    sizes = [int(x) for x in args.sizes.split(",")]
    pool = distinct_questions(max(sizes))
    queries = read_queries()
    queries = (queries * (args.queries // len(queries) + 1))[: args.queries]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    result: dict = {"machine": machine, "queries": len(queries), "runs": []}
    for size in sizes:
        docs = pool[:size]
        with tempfile.TemporaryDirectory() as tmp:
            api = run_api(docs, queries, Path(tmp) / "api")
            raw = run_raw(queries, Path(tmp) / "api" / "qdrant")  # the server has exited: same collection
        run = {
            "docs": len(docs),
            "api": api,
            "raw": raw,
            "p50_ratio_api_over_raw": api["latency_ms"]["p50"] / raw["latency_ms"]["p50"],
            "p99_ratio_api_over_raw": api["latency_ms"]["p99"] / raw["latency_ms"]["p99"],
            "rps_ratio_api_over_raw": api["rps"] / raw["rps"],
        }
        result["runs"].append(run)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    print(f"search latency, {len(queries)} sequential queries, k=10, Qdrant local mode ({machine})")
    print(f"{'docs':>7}  {'path':<28}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    for run in result["runs"]:
        for name, r in (("HTTP API (flywheel serve)", run["api"]), ("raw encode + query_points", run["raw"])):
            lat = r["latency_ms"]
            print(f"{run['docs']:>7}  {name:<28}{lat['p50']:>9.1f}{lat['p95']:>9.1f}{lat['p99']:>9.1f}{r['rps']:>8.1f}")
        print(
            f"{'':>7}  API / raw: p50 {run['p50_ratio_api_over_raw']:.2f}x, p99 {run['p99_ratio_api_over_raw']:.2f}x,"
            f" req/s {run['rps_ratio_api_over_raw']:.2f}x; raw encode p50 {run['raw']['encode_ms']['p50']:.1f} ms;"
            f" ingest {run['api']['ingest_docs_per_s']:.0f} docs/s"
        )


if __name__ == "__main__":
    main()
