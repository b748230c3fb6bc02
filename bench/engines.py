"""Embedded engines side by side: Qdrant local mode (`Index`) vs Qdrant Edge (`EdgeIndex`), one run, interleaved.

For each corpus size both engines get the same random unit vectors (384 dims, the packaged MiniLM's size) with
flywheel's payload (doc_id, text, metadata with one of 10 tenants, content hash), written through the index
classes the service uses; Edge then builds its HNSW graph the way the service does (`EdgeIndex.optimize`, a
child process). Queries are noisy copies of corpus vectors (cosine about 0.7 to their source, so each has a
clear nearest document, as a real query has), timed one after another, local and Edge alternating (which
goes first alternates too), k=10, unfiltered and with a one-tenant filter (10% of the corpus; Edge has a
keyword payload index on the tenant, as `FLYWHEEL_PAYLOAD_INDEXES=tenant:keyword` makes, unless
--no-payload-index). Recall@10 of
Edge (and of local mode, as a check) is measured against an exact numpy search of the same vectors, at the
configured hnsw_ef and a few others. Random vectors are the hard case for HNSW: real embeddings cluster, and
their recall at the same settings is higher. No model is loaded.

With `--vectors mixed` the corpus is made from real embeddings instead (the packaged MiniLM's vectors of the
shipped Quora and SciFact texts, bench/.cache as bench/learners.py makes it): each document mixes two of them
and noise, normalize(a + b/2 + 0.6 g/sqrt(384)) for real a, b and Gaussian g, so it lies where real embeddings
lie, clustered; past the ~15,000 shipped texts that is how a corpus of a million gets the shape of a real one.

    .venv/bin/python bench/engines.py [--sizes 10000,50000,200000] [--queries 200] [--filtered 50] \
        [--vectors random|mixed]

Prints a table and writes bench/results/engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from qdrant_client import QdrantClient

from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.index import Index
from flywheel.types import Document

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path("/work/shared/data/quora_duplicate_questions")
DIM = 384
K = 10


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95)), "mean": float(ms.mean())}


def _mixed(n: int, rng: np.random.Generator, real: np.ndarray) -> np.ndarray:
    """n unit vectors shaped like real embeddings: two real ones mixed, plus noise (see the module docstring)."""
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 100_000):  # in blocks: a million rows at once would need several GB of temporaries
        m = min(100_000, n - start)
        a, b = real[rng.integers(0, len(real), m)], real[rng.integers(0, len(real), m)]
        out[start : start + m] = _unit(a + b / 2 + 0.6 * rng.normal(size=(m, DIM)) / np.sqrt(DIM))
    return out


def _real_vectors() -> np.ndarray:
    """The packaged MiniLM's unit vectors of every shipped Quora and SciFact text (cached in bench/.cache)."""
    import sys

    sys.path.insert(0, str(ROOT))
    from bench.learners import worlds_with_vectors

    return np.stack([v for _, vec in worlds_with_vectors("quora,scifact") for v in vec.values()]).astype(np.float32)


def _build(n: int, rng: np.random.Generator, folder: Path, args: argparse.Namespace) -> dict:
    """Both engines on one corpus; returns the timings and recalls of this size."""
    vectors = _unit(rng.normal(size=(n, DIM))) if args.real_pool is None else _mixed(n, rng, args.real_pool)
    docs = [Document(f"d{i}", f"document {i} " + "lorem ipsum " * 15, {"tenant": f"t{i % 10}"}) for i in range(n)]
    # Local mode keeps every collection in memory and writes it through to SQLite point by point (about 100
    # points/s here): its search is the same in memory, so the corpus goes to ":memory:" and the write-through
    # is timed once, in main().
    client = QdrantClient(":memory:")
    local = Index(client, "documents")
    indexes = {"tenant": "keyword"} if args.payload_index else None  # FLYWHEEL_PAYLOAD_INDEXES=tenant:keyword
    edge = EdgeIndex(
        folder / "edge", "documents", args.hnsw_m, args.hnsw_ef_construct, args.hnsw_ef, payload_indexes=indexes
    )
    row: dict = {"documents": n, "edge_payload_index": bool(indexes), "vectors": args.vectors}
    try:
        for name, index in (("local", local), ("edge", edge)):
            start = time.perf_counter()
            index.create("v1", DIM)
            index.upsert("v1", docs, vectors, batch_size=512)
            index.point_alias("v1")
            row[f"{name}_write_s"] = time.perf_counter() - start
        start = time.perf_counter()
        built = edge.optimize("v1")
        row["edge_index_build_s"] = time.perf_counter() - start if built else 0.0
        picks = rng.integers(0, n, size=args.queries)
        queries = _unit(vectors[picks] + rng.normal(size=(args.queries, DIM)).astype(np.float32) / np.sqrt(DIM))
        exact = np.stack([np.argsort(-(q @ vectors.T))[:K] for q in queries])  # a row at a time: n may be 1M
        truth = [{f"d{j}" for j in r} for r in exact]
        timings: dict[str, list[float]] = {"local": [], "edge": [], "local_filtered": [], "edge_filtered": []}
        found: dict[str, list[float]] = {"local": [], "edge": []}
        for i, q in enumerate(queries):
            order = (("local", local), ("edge", edge)) if i % 2 == 0 else (("edge", edge), ("local", local))
            for name, index in order:
                start = time.perf_counter()
                hits = index.search(q, K)
                timings[name].append(time.perf_counter() - start)
                found[name].append(len({h.doc_id for h in hits} & truth[i]) / K)
                if i < args.filtered:
                    start = time.perf_counter()
                    hits = index.search(q, K, metadata_filter={"tenant": "t3"})
                    timings[f"{name}_filtered"].append(time.perf_counter() - start)
                    assert all(h.metadata["tenant"] == "t3" for h in hits) and len(hits) == K
        for name, values in timings.items():
            row[name] = _percentiles(values)
        row["recall_local"] = float(np.mean(found["local"]))
        row["recall_edge"] = float(np.mean(found["edge"]))
        sweep = {}
        for ef in args.ef_sweep:
            edge.hnsw_ef = ef
            hits = [{h.doc_id for h in edge.search(q, K)} for q in queries]
            sweep[str(ef)] = float(np.mean([len(h & t) / K for h, t in zip(hits, truth, strict=True)]))
        row["recall_edge_by_ef"] = sweep
        files = [f for f in (folder / "edge").rglob("*") if f.is_file()]
        row["edge_folder_mb"] = {  # the WAL and mmap files are preallocated: apparent size vs blocks written
            "apparent": sum(f.stat().st_size for f in files) / 2**20,
            "on_disk": sum(f.stat().st_blocks * 512 for f in files) / 2**20,
        }
    finally:
        client.close()
        edge.close()
    return row


def _local_disk_write(rng: np.random.Generator, n: int = 1000) -> float:
    """Documents per second that local mode writes to its folder (SQLite write-through), batches of 512."""
    vectors = _unit(rng.normal(size=(n, DIM)))
    docs = [Document(f"d{i}", f"document {i} " + "lorem ipsum " * 15, {"tenant": f"t{i % 10}"}) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        client = QdrantClient(path=tmp)
        try:
            index = Index(client, "documents")
            index.create("v1", DIM)
            start = time.perf_counter()
            index.upsert("v1", docs, vectors, batch_size=512)
            return n / (time.perf_counter() - start)
        finally:
            client.close()


def _real_recall(n: int, args: argparse.Namespace) -> dict:
    """Edge's recall@10 on real embeddings: n distinct Quora questions (the shared pool) embedded with the packaged
    MiniLM, queried by 200 other questions; exact numpy search is the truth."""
    import gzip

    from flywheel.models.loading import load_model
    from flywheel.util.packaged import packaged_model_path

    seen: dict[str, None] = {}
    for name in ("dev.jsonl.gz", "train_pool.jsonl.gz"):
        with gzip.open(SHARED / name, "rt", encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                seen.update({row["question1"]: None, row["question2"]: None})
    texts = list(seen)[: n + args.queries]
    model = load_model(packaged_model_path(), "cpu")
    start = time.perf_counter()
    embedded = model.encode(texts, batch_size=128, normalize_embeddings=True, convert_to_numpy=True)
    encode_s = time.perf_counter() - start
    vectors, queries = embedded[:n].astype(np.float32), embedded[n:].astype(np.float32)
    truth = [{f"d{j}" for j in r} for r in np.argsort(-(queries @ vectors.T), axis=1)[:, :K]]
    docs = [Document(f"d{i}", t, {}) for i, t in enumerate(texts[:n])]
    with tempfile.TemporaryDirectory() as tmp:
        edge = EdgeIndex(Path(tmp), "documents", args.hnsw_m, args.hnsw_ef_construct, args.hnsw_ef)
        try:
            edge.create("v1", vectors.shape[1])
            edge.upsert("v1", docs, vectors, batch_size=512)
            edge.point_alias("v1")
            start = time.perf_counter()
            edge.optimize("v1")
            build_s = time.perf_counter() - start
            sweep, latency = {}, {}
            for ef in args.ef_sweep:
                edge.hnsw_ef = ef
                seconds, found = [], []
                for q, t in zip(queries, truth, strict=True):
                    start = time.perf_counter()
                    hits = edge.search(q, K)
                    seconds.append(time.perf_counter() - start)
                    found.append(len({h.doc_id for h in hits} & t) / K)
                sweep[str(ef)], latency[str(ef)] = float(np.mean(found)), _percentiles(seconds)
        finally:
            edge.close()
    return {
        "documents": n,
        "encode_s": encode_s,
        "edge_index_build_s": build_s,
        "recall_edge_by_ef": sweep,
        "edge_latency_by_ef": latency,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,50000,200000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--filtered", type=int, default=50, help="of the queries, how many also run filtered")
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--hnsw-ef-construct", type=int, default=100)
    parser.add_argument("--hnsw-ef", type=int, default=128)
    parser.add_argument("--ef-sweep", default="32,64,128,256")
    parser.add_argument(
        "--no-payload-index",
        dest="payload_index",
        action="store_false",
        help="Edge without the tenant payload index (filters then read candidates' payloads)",
    )
    parser.add_argument("--vectors", choices=("random", "mixed"), default="random", help="the corpus' vectors")
    parser.add_argument("--real", type=int, default=0, help="also: Edge's recall on N real MiniLM embeddings")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "engines.json")
    args = parser.parse_args()
    args.ef_sweep = [int(x) for x in args.ef_sweep.split(",")]
    rng = np.random.default_rng(0)
    args.real_pool = _real_vectors() if args.vectors == "mixed" else None
    real = _real_recall(args.real, args) if args.real else None
    if real is not None:
        print(json.dumps(real), flush=True)
    local_write = _local_disk_write(rng)
    print(f"local mode on disk writes {local_write:.0f} documents/s", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",") if s]:
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(_build(n, rng, Path(tmp), args))
        print(json.dumps(rows[-1]), flush=True)
    header = "| docs | engine | p50 ms | p95 ms | filtered p50 ms | filtered p95 ms | recall@10 | write s | index s |"
    # local write s is the in-memory write; on disk it is n / local_disk_write_docs_per_s
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for r in rows:
        for name in ("local", "edge"):
            print(
                f"| {r['documents']:,} | {name} | {r[name]['p50']:.1f} | {r[name]['p95']:.1f} | "
                f"{r[name + '_filtered']['p50']:.1f} | {r[name + '_filtered']['p95']:.1f} | "
                f"{r['recall_' + name]:.3f} | {r[name + '_write_s']:.0f} | "
                f"{r['edge_index_build_s'] if name == 'edge' else 0:.0f} |"
            )
    for r in rows + ([real] if real else []):
        kind = "real MiniLM" if r is real else args.vectors
        print(f"edge recall@10 by hnsw_ef, {r['documents']:,} {kind} vectors: {r['recall_edge_by_ef']}")
    result = {
        "command": f"bench/engines.py --sizes {args.sizes} --vectors {args.vectors}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load": os.getloadavg()[0]},
        "settings": {"hnsw_m": args.hnsw_m, "hnsw_ef_construct": args.hnsw_ef_construct, "hnsw_ef": args.hnsw_ef},
        "local_disk_write_docs_per_s": local_write,
        "queries": args.queries,
        "filtered_queries": args.filtered,
        "rows": rows,
        "real": real,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
