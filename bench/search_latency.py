"""Search latency through HTTP (`flywheel serve` in its own process) vs the raw baseline in one process.

The baseline is the least any search can cost: sentence-transformers encode + qdrant-client query_points on
a local-mode collection with the same documents, no HTTP, no logging. The ratio says what the API adds
(HTTP, validation, the DuckDB search log that makes feedback possible).

    .venv/bin/python bench/search_latency.py [--docs 4862] [--queries 200]

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


def run_raw(docs: list[dict], queries: list[str], folder: Path) -> dict:
    """Encode + query_points in one process: the floor under any search API."""
    from qdrant_client import QdrantClient, models
    from sentence_transformers import SentenceTransformer

    from flywheel.config import packaged_model_path

    model = SentenceTransformer(packaged_model_path(), device="cpu")
    client = QdrantClient(path=str(folder))
    client.create_collection("raw", vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE))
    vectors = model.encode([d["text"] for d in docs], batch_size=64, normalize_embeddings=True)
    client.upload_collection(
        "raw", vectors=vectors, ids=list(range(len(docs))), payload=[{"t": d["text"]} for d in docs]
    )
    for q in queries[:10]:
        client.query_points("raw", query=model.encode(q, normalize_embeddings=True).tolist(), limit=10)
    times, encode_times = [], []
    t0 = time.perf_counter()
    for q in queries:
        s = time.perf_counter()
        vec = model.encode(q, normalize_embeddings=True)
        encode_times.append((time.perf_counter() - s) * 1000)
        client.query_points("raw", query=vec.tolist(), limit=10, with_payload=True)
        times.append((time.perf_counter() - s) * 1000)
    wall = time.perf_counter() - t0
    client.close()
    return {"latency_ms": _percentiles(times), "encode_ms": _percentiles(encode_times), "rps": len(queries) / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4862)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_latency.json")
    args = parser.parse_args()

    docs = _read_jsonl_gz(DATA / "corpus.jsonl.gz")[: args.docs]
    queries = [q["text"] for q in _read_jsonl_gz(DATA / "queries.jsonl.gz")]
    queries = (queries * (args.queries // len(queries) + 1))[: args.queries]
    with tempfile.TemporaryDirectory() as tmp:
        api = run_api(docs, queries, Path(tmp) / "api")
        raw = run_raw(docs, queries, Path(tmp) / "raw")
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "docs": len(docs),
        "queries": len(queries),
        "api": api,
        "raw": raw,
        "p50_ratio_api_over_raw": api["latency_ms"]["p50"] / raw["latency_ms"]["p50"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))

    print(f"search latency, {len(docs)} documents, {len(queries)} sequential queries, k=10 ({result['machine']})")
    print(f"{'path':<34}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'req/s':>8}")
    for name, r in (("HTTP API (flywheel serve)", api), ("raw encode + query_points", raw)):
        lat = r["latency_ms"]
        print(f"{name:<34}{lat['p50']:>9.1f}{lat['p95']:>9.1f}{lat['p99']:>9.1f}{r['rps']:>8.1f}")
    print(f"{'  of which encode (raw)':<34}{raw['encode_ms']['p50']:>9.1f}")
    print(f"API p50 / raw p50 = {result['p50_ratio_api_over_raw']:.2f}x; ingest {api['ingest_docs_per_s']:.0f} docs/s")


if __name__ == "__main__":
    main()
