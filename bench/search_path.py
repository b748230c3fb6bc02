"""POST /search end to end vs the raw encode + engine query it is made of, by engine, backend and corpus size.

For each corpus size a data dir is made the way a user's is (DuckDB documents, the packaged MiniLM as v1), but
the collection is filled with synthetic unit vectors (384 dims) written through the service's own index class,
with the content hashes start-up repair checks, so no document is embedded: 100,000 real embeddings take about
half an hour on a 2-core CPU. With `--vectors mixed` they are made from real embeddings as in bench/engines.py
(clustered as real ones are: Edge's HNSW graph of a million random vectors did not finish in 45 minutes here).
Query texts are the shipped Quora retrieval queries, encoded by the real model;
against synthetic document vectors their neighbours mean nothing, but the engine does the same work (for recall
on real embeddings see bench/engines.py and docs/engines.md). A backend of another precision (onnx-int8 after
torch) re-embeds the collection's short synthetic texts at its server's start, as the service does for any
collection whose vectors another precision made, so its rows are on those vectors. Then, for each engine and
encoder backend:
  - `flywheel serve` (its own process) answers Q sequential searches through HTTP (k=10): p50/p99 and req/s,
    each query sent once through httpx and once through a bare `http.client` keep-alive connection (the
    lean client: what the server costs with almost nothing added by the client); each lean answer's
    Server-Timing header splits its time into the encoder and the engine in the server, the rest of the search
    on its thread, and what lies outside it (HTTP, parsing, the hop to the search thread): the second table;
  - in this process, after the server stops, the same queries as raw calls: the encoder's `encode` and the
    index's `search` on the same collection (no HTTP, no validation, no log): the floor under the API.
Every pair runs in the same session, one after the other, so the ratios are what to read on shared cores.
With `--rounds N` each pair runs N times in turn (server, raw, server, raw, ...): the table shows the round
whose API / raw p50 ratio is the median, and under it every round's ratios, so a reader sees how far they move.

    .venv/bin/python bench/search_path.py [--sizes 10000,100000] [--engines local,edge] \
        [--backends torch,onnx,onnx-int8] [--queries 300] [--rounds 1] [--vectors random|mixed]

Prints a table and writes bench/results/search_path.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from http.client import HTTPConnection
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engines import _mixed, _real_vectors  # noqa: E402
from bench.search_latency import _free_port, _percentiles, read_queries  # noqa: E402

DIM = 384
JSON = "application/json"
START_TIMEOUT_S = 3600


def build(template: Path, engine: str, n_docs: int, real: np.ndarray | None = None) -> None:
    """A data dir with n synthetic documents in DuckDB and their synthetic vectors in v1's collection (random
    unit vectors, or with `real` embeddings mixed as bench/engines.py's `--vectors mixed` does)."""
    from flywheel.config import Settings
    from flywheel.serve.engine import open_engine
    from flywheel.serve.service import Service
    from flywheel.serve.store import Store
    from flywheel.types import Document

    settings = Settings(data_dir=template, qdrant_engine=engine, int8_max_error_increase=0.01)
    Service.open(settings).close()  # first start: v1 registered, its (empty) collection made and served
    docs = [Document(f"d{i}", f"synthetic document {i}", {"tenant": f"t{i % 10}"}) for i in range(n_docs)]
    store = Store(settings.db_file)
    try:
        with store.transaction() as con:
            store.upsert_documents(con, docs)
    finally:
        store.close()
    rng = np.random.default_rng(0)
    index = open_engine(settings, engine)
    try:
        for start in range(0, n_docs, 10_000):
            m = min(10_000, n_docs - start)
            v = rng.normal(size=(m, DIM)).astype(np.float32) if real is None else _mixed(m, rng, real)
            index.upsert("v1", docs[start : start + len(v)], v / np.linalg.norm(v, axis=1, keepdims=True), 1024)
        index.optimize("v1")  # Edge: the HNSW graph (the server would build it at start anyway)
    finally:
        index.close()


def export(template: Path) -> None:
    """Export v1 to ONNX once (fp32 + int8 with its guard), so no server start times an export."""
    from flywheel.config import Settings
    from flywheel.models.guard import ensure_export
    from flywheel.models.registry import Registry

    settings = Settings(data_dir=template, int8_max_error_increase=0.01)
    registry = Registry(settings.models_dir)
    ensure_export(registry, registry.get("v1"), settings)


def http(data_dir: Path, backend: str, queries: list[str]) -> dict:
    """Sequential POST /search through `flywheel serve` with the backend."""
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FLYWHEEL_LOG_LEVEL": "warning",
        "FLYWHEEL_ENCODER_BACKEND": backend,
        "FLYWHEEL_INT8_MAX_ERROR_INCREASE": "0.01",
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "flywheel", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
        # Start-up checks every stored hash and, for a backend of another precision than the vectors' (int8
        # after torch), re-embeds every document: at a million documents that is well over 10 minutes here,
        # so wait up to an hour and say so if it never comes up.
        started = time.monotonic()
        while time.monotonic() - started < START_TIMEOUT_S:
            if proc.poll() is not None:
                raise SystemExit(f"flywheel serve ({backend}) exited with {proc.returncode} while starting")
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise SystemExit(f"flywheel serve ({backend}) not up after {START_TIMEOUT_S} s")
        start_s = time.monotonic() - started
        served = client.get("/healthz").json()["encoder_backend"]
        for q in queries[:20]:
            client.post("/search", json={"query": q, "k": 10}).raise_for_status()
        lean = HTTPConnection("127.0.0.1", port, timeout=300)
        times, lean_times, stages = [], [], []
        t_all = time.perf_counter()
        for i, q in enumerate(queries):
            # Each query twice, through httpx and through the standard library's keep-alive connection (a
            # client with almost no cost of its own), which goes first alternating: what the server costs is
            # the second, what a typical Python client adds is the difference.
            for via in ("httpx", "lean") if i % 2 == 0 else ("lean", "httpx"):
                t0 = time.perf_counter()
                if via == "httpx":
                    client.post("/search", json={"query": q, "k": 10}).raise_for_status()
                    times.append((time.perf_counter() - t0) * 1000)
                else:
                    lean.request("POST", "/search", json.dumps({"query": q, "k": 10}), {"content-type": JSON})
                    answer = lean.getresponse()
                    answer.read()
                    assert answer.status == 200, answer.status
                    lean_times.append((time.perf_counter() - t0) * 1000)
                    stages.append(_server_timing(answer.getheader("server-timing", "")))
        wall = time.perf_counter() - t_all
        floor = []  # the same server's cheapest route: what HTTP, uvicorn and the client cost alone
        for _ in queries:
            t0 = time.perf_counter()
            client.get("/livez").raise_for_status()
            floor.append((time.perf_counter() - t0) * 1000)
        return {
            "served_backend": served,
            "latency_ms": _percentiles(times),
            "lean_latency_ms": _percentiles(lean_times),
            "rps": 2 * len(queries) / wall,
            "livez_ms": _percentiles(floor),
            "server_ms": _split(stages, lean_times),
            "start_s": round(start_s, 1),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:  # still in start-up work that does not watch for signals
            proc.kill()
            proc.wait()


def _server_timing(header: str) -> dict[str, float]:
    """A search's Server-Timing header (`encode;dur=1.23, ...`) as {stage: ms}."""
    parts = (part.strip().partition(";dur=") for part in header.split(",") if ";dur=" in part)
    return {name: float(ms) for name, _, ms in parts}


def _split(stages: list[dict[str, float]], totals: list[float]) -> dict[str, float]:
    """Where the lean client's searches spent their time, by the server's own Server-Timing (p50s, ms): the
    encoder and the engine in the server, the rest of the search on its thread (ranking, rendering, logging),
    and what is outside it (HTTP, parsing, the hop to the search thread), each a median of per-search values."""
    if not stages or "search" not in stages[0]:
        return {}
    rest = [s["search"] - s["encode"] - s["engine"] for s in stages]
    outside = [total - s["search"] for s, total in zip(stages, totals, strict=True)]
    return {
        "encode": float(np.median([s["encode"] for s in stages])),
        "engine": float(np.median([s["engine"] for s in stages])),
        "rest_of_search": float(np.median(rest)),
        "outside_search": float(np.median(outside)),
    }


def raw(data_dir: Path, backend: str, queries: list[str]) -> dict:
    """The same queries as raw encode + index.search calls in this process, on the same collection."""
    from flywheel.config import Settings
    from flywheel.serve.service import Service

    service = Service.open(Settings(data_dir=data_dir, encoder_backend=backend, int8_max_error_increase=0.01))
    try:
        encoder, index = service.encoder, service.index
        for q in queries[:20]:
            index.search(encoder.encode([q])[0], 10)
        times, encode = [], []
        t_all = time.perf_counter()
        for q in queries:
            t0 = time.perf_counter()
            vector = encoder.encode([q])[0]
            t1 = time.perf_counter()
            index.search(vector, 10)
            times.append((time.perf_counter() - t0) * 1000)
            encode.append((t1 - t0) * 1000)
        wall = time.perf_counter() - t_all
        engine = [total - e for total, e in zip(times, encode, strict=True)]
        return {
            "latency_ms": _percentiles(times),
            "encode_ms": _percentiles(encode),
            "engine_ms": _percentiles(engine),
            "rps": len(queries) / wall,
        }
    finally:
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--engines", default="local,edge")
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--vectors", choices=("random", "mixed"), default="random", help="see bench/engines.py")
    parser.add_argument("--rounds", type=int, default=1, help="run each server / raw pair this many times in turn")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "search_path.json")
    args = parser.parse_args()
    queries = read_queries()[: args.queries]
    real = _real_vectors() if args.vectors == "mixed" else None
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in [int(s) for s in args.sizes.split(",")]:
            for engine in args.engines.split(","):
                template = Path(tmp) / f"{engine}-{n}"
                t0 = time.perf_counter()
                build(template, engine, n, real)
                export(template)
                print(f"built {engine} with {n} documents in {time.perf_counter() - t0:.0f} s", flush=True)
                for backend in args.backends.split(","):
                    rounds = [
                        (http(template, backend, queries), raw(template, backend, queries)) for _ in range(args.rounds)
                    ]
                    row = {"documents": n, "engine": engine, "backend": backend, **_median_round(rounds)}
                    rows.append(row)
                    print(_line(row), flush=True)
                shutil.rmtree(template, ignore_errors=True)
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(table(result))


def _median_round(rounds: list[tuple[dict, dict]]) -> dict:
    """One row from N rounds of (server, raw): the round whose API / raw p50 ratio is the median (its own
    figures, so they stay consistent), and every round's ratios."""
    ratios = [
        {
            "p50_ratio": api["latency_ms"]["p50"] / floor["latency_ms"]["p50"],
            "lean_p50_ratio": api["lean_latency_ms"]["p50"] / floor["latency_ms"]["p50"],
        }
        for api, floor in rounds
    ]
    middle = sorted(range(len(rounds)), key=lambda i: ratios[i]["p50_ratio"])[len(rounds) // 2]
    api, floor = rounds[middle]
    return {"http": api, "raw": floor, **ratios[middle], "rounds": ratios}


def _line(r: dict) -> str:
    h, f = r["http"]["latency_ms"], r["raw"]["latency_ms"]
    return (
        f"| {r['documents']:,} | {r['engine']} | {r['backend']} ({r['http']['served_backend']}) | {h['p50']:.1f} / "
        f"{h['p99']:.1f} | {r['http']['rps']:.0f} | {f['p50']:.1f} / {f['p99']:.1f} | "
        f"{r['raw']['encode_ms']['p50']:.1f} | {r['p50_ratio']:.2f}x | {r['http']['lean_latency_ms']['p50']:.1f} | "
        f"{r['lean_p50_ratio']:.2f}x | {r['http']['livez_ms']['p50']:.1f} |"
    )


def table(result: dict) -> str:
    """The Markdown table of a run, with the local/Edge ratio of POST /search p50 at each size and backend."""
    lines = [
        f"({result['machine']})",
        "| documents | engine | backend (served) | POST /search p50 / p99 ms | req/s | raw encode + engine p50 / p99 ms"
        " | of which encode p50 ms | API / raw p50 | POST /search p50 ms, lean client | lean API / raw p50"
        " | GET /livez p50 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_line(r) for r in result["rows"]]
    for r in result["rows"]:
        if len(r.get("rounds", [])) > 1:
            httpx_ratios = ", ".join(f"{x['p50_ratio']:.2f}x" for x in r["rounds"])
            lean_ratios = ", ".join(f"{x['lean_p50_ratio']:.2f}x" for x in r["rounds"])
            name = f"{r['documents']:,} {r['engine']} {r['backend']}"
            lines.append(f"{name}: API / raw by round {httpx_ratios}; lean {lean_ratios}")
    split = [r for r in result["rows"] if r["http"].get("server_ms")]
    if split:
        lines += [
            "",
            "Where the lean client's searches went (p50 ms; in the server by its Server-Timing header, beside the"
            " raw calls' own):",
            "| documents | engine | backend | encode: raw / in server | engine: raw / in server | rest of the search"
            " on its thread | outside it (HTTP, parsing, the hop) | lean POST /search | lean / in-server encode +"
            " engine |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in split:
            srv, f = r["http"]["server_ms"], r["raw"]
            lines.append(
                f"| {r['documents']:,} | {r['engine']} | {r['backend']} | {f['encode_ms']['p50']:.2f} / "
                f"{srv['encode']:.2f} | {f['engine_ms']['p50']:.2f} / {srv['engine']:.2f} | "
                f"{srv['rest_of_search']:.2f} | {srv['outside_search']:.2f} | "
                f"{r['http']['lean_latency_ms']['p50']:.2f} | "
                f"{r['http']['lean_latency_ms']['p50'] / (srv['encode'] + srv['engine']):.2f}x |"
            )
    by = {(r["documents"], r["backend"], r["engine"]): r["http"]["latency_ms"]["p50"] for r in result["rows"]}
    for (n, backend, engine), p50 in sorted(by.items()):
        if engine == "edge" and (n, backend, "local") in by:
            lines.append(
                f"{n:,} documents, {backend}: local / Edge POST /search p50 = {by[(n, backend, 'local')] / p50:.1f}x"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
