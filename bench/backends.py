"""Encoder backends compared in one run: torch vs ONNX Runtime fp32 vs ONNX Runtime int8 (per-channel).

For each backend, on the packaged all-MiniLM-L6-v2 and the shipped Quora retrieval slice:
  - search latency through HTTP (`flywheel serve` in its own process, FLYWHEEL_ENCODER_BACKEND=<backend>):
    p50/p95/p99 of sequential single searches, k=10;
  - the bare encoder in this process: p50 of encoding one query, and corpus encoding docs/s (batch 64,
    what re-embedding costs);
  - HTTP ingest docs/s (encode + Qdrant + DuckDB);
  - pair error on the shipped Quora dev pairs (same split and method as the gate), with the change vs torch.
The v1 export (and its accuracy guard) is made once, before any timing. Ratios are against torch, measured
in the same run; the load average is recorded because the cores may be shared.

    .venv/bin/python bench/backends.py [--docs 1000] [--queries 200] [--pairs 1500] [--int8-tolerance 0.01]

The accuracy guard is recorded at the default thresholds; if it refuses int8, the int8 rows are measured with
FLYWHEEL_INT8_MAX_ERROR_INCREASE=--int8-tolerance so that int8 itself is what gets timed (the JSON says so).

Prints a table and writes bench/results/backends.json.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.search_latency import DATA, _free_port, _percentiles, _read_jsonl_gz  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")


def prepare(template: Path, guard_pairs: Path) -> dict:
    """Register the base model in a template data dir and export + guard it once; return the export meta."""
    from flywheel.config import Settings
    from flywheel.models.guard import ensure_export
    from flywheel.serve.service import Service

    settings = Settings(data_dir=template, guard_pairs=guard_pairs)
    service = Service.open(settings)
    try:
        t0 = time.perf_counter()
        _, meta = ensure_export(service.registry, service.registry.get("v1"), settings)
        meta["bench_export_and_guard_s"] = time.perf_counter() - t0
    finally:
        service.close()
    return meta


def bare(backend: str, template: Path, docs: list[str], queries: list[str], tolerance: float) -> dict:
    """The encoder alone, in this process: one-query encode p50, corpus docs/s, and the encoder for pair error."""
    from flywheel.config import Settings
    from flywheel.models.encoder import load_encoder
    from flywheel.models.registry import Registry

    settings = Settings(data_dir=template, encoder_backend=backend, int8_max_error_increase=tolerance)
    registry = Registry(settings.models_dir)
    encoder = load_encoder(registry, registry.get("v1"), settings)
    for q in queries[:20]:
        encoder.encode([q])
    times = []
    for q in queries:
        t0 = time.perf_counter()
        encoder.encode([q])
        times.append((time.perf_counter() - t0) * 1000)
    t0 = time.perf_counter()
    encoder.encode(docs)
    corpus_s = time.perf_counter() - t0
    return {
        "served_backend": encoder.backend,
        "encode_ms": _percentiles(times),
        "corpus_docs_per_s": len(docs) / corpus_s,
        "encoder": encoder,
    }


def http(backend: str, template: Path, data_dir: Path, docs: list[dict], queries: list[str], tolerance: float) -> dict:
    """`flywheel serve` with the backend on a copy of the template: ingest, then sequential searches."""
    shutil.copytree(template / "models", data_dir / "models")
    port = _free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FLYWHEEL_LOG_LEVEL": "warning",
        "FLYWHEEL_ENCODER_BACKEND": backend,
        "FLYWHEEL_INT8_MAX_ERROR_INCREASE": str(tolerance),
        "PYTHONPATH": str(ROOT),
    }
    cmd = [sys.executable, "-m", "flywheel", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300)
        for _ in range(1200):
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        served = client.get("/healthz").json()["encoder_backend"]
        t0 = time.perf_counter()
        for start in range(0, len(docs), 500):
            batch = [{"id": d["_id"], "text": d["text"]} for d in docs[start : start + 500]]
            client.post("/documents", json={"documents": batch}).raise_for_status()
        ingest_s = time.perf_counter() - t0
        for q in queries[:20]:
            client.post("/search", json={"query": q, "k": 10})
        times = []
        for q in queries:
            t0 = time.perf_counter()
            client.post("/search", json={"query": q, "k": 10}).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        return {"served_backend": served, "search_ms": _percentiles(times), "ingest_docs_per_s": len(docs) / ingest_s}
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--pairs", type=int, default=1500, help="first N shipped Quora dev pairs (guard + error)")
    parser.add_argument("--int8-tolerance", type=float, default=0.01, help="used only if the default refuses")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "backends.json")
    args = parser.parse_args()

    from flywheel.config import Settings
    from flywheel.formats.pairs import load_labelled_pairs
    from flywheel.models.guard import SHIPPED_PAIRS, _Cached, verdict
    from flywheel.scoring.pair_error import compare_pair_error

    docs = _read_jsonl_gz(DATA / "corpus.jsonl.gz")[: args.docs]
    queries = [q["text"] for q in _read_jsonl_gz(DATA / "queries.jsonl.gz")]
    queries = (queries * (args.queries // len(queries) + 1))[: args.queries]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        pairs_file = Path(tmp) / "pairs.jsonl"
        with gzip.open(SHIPPED_PAIRS, "rt", encoding="utf-8") as fh:
            pairs_file.write_text("".join(itertools.islice(fh, args.pairs)), encoding="utf-8")
        pairs = load_labelled_pairs(pairs_file)
        template = Path(tmp) / "template"
        meta = prepare(template, pairs_file)
        default_verdict = verdict(meta["guard"], Settings())
        tolerance = Settings().int8_max_error_increase if default_verdict["passed"] else args.int8_tolerance
        # One backend at a time (torch first): taking turns within one process let ONNX Runtime's spinning
        # threads slow the next torch call down by an order of magnitude on 2 shared cores.
        rows = {b: bare(b, template, [d["text"] for d in docs], queries, tolerance) for b in BACKENDS}
        torch_model = _Cached(rows["torch"]["encoder"].model)  # encode the reference texts once
        for backend in BACKENDS:
            encoder = rows[backend].pop("encoder")
            compared = compare_pair_error(torch_model, encoder.model, pairs, seed=42)
            rows[backend]["pair_error"] = compared["candidate"]["error_rate"]
            rows[backend]["pair_error_change_vs_torch"] = {
                "mean": compared["delta_error"],
                "ci95": compared["delta_ci95"],
            }
        for backend in BACKENDS:
            rows[backend].update(http(backend, template, Path(tmp) / backend, docs, queries, tolerance))
    base = rows["torch"]
    for row in rows.values():
        row["encode_speedup_vs_torch"] = base["encode_ms"]["p50"] / row["encode_ms"]["p50"]
        row["corpus_speedup_vs_torch"] = row["corpus_docs_per_s"] / base["corpus_docs_per_s"]
        row["search_p50_over_bare_encode_p50"] = row["search_ms"]["p50"] / row["encode_ms"]["p50"]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "model": "all-MiniLM-L6-v2 (packaged)",
        "docs": len(docs),
        "queries": len(queries),
        "pairs": len(pairs),
        "export": {k: meta.get(k) for k in ("opset", "quantization", "parity", "guard", "bench_export_and_guard_s")},
        "guard_at_default_thresholds": default_verdict,
        "int8_max_error_increase_used": tolerance,
        "backends": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(table(result))


def table(result: dict) -> str:
    """The README table (markdown)."""
    lines = [
        f"{result['docs']} Quora documents, {result['queries']} sequential single searches (k=10), "
        f"{result['pairs']} Quora dev pairs; {result['machine']}; load average "
        f"{result['load_average_before_after'][0]:.1f} → {result['load_average_before_after'][1]:.1f}",
        f"int8 accuracy guard at the default thresholds: "
        f"{'passed' if result['guard_at_default_thresholds']['passed'] else 'REFUSED'} "
        f"({result['guard_at_default_thresholds']['reason']}); int8 rows measured with "
        f"int8_max_error_increase={result['int8_max_error_increase_used']}",
        "",
        "| backend | search p50 / p95 / p99 (HTTP) | encode 1 query p50 | search p50 ÷ encode p50 "
        "| corpus encoding | HTTP ingest | pair error (change vs torch, 95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["backends"].items():
        s, e, d = r["search_ms"], r["encode_ms"], r["pair_error_change_vs_torch"]
        lines.append(
            f"| {name} (served: {r['served_backend']}) | {s['p50']:.1f} / {s['p95']:.1f} / {s['p99']:.1f} ms "
            f"| {e['p50']:.2f} ms ({r['encode_speedup_vs_torch']:.1f}x) | {r['search_p50_over_bare_encode_p50']:.2f}x "
            f"| {r['corpus_docs_per_s']:.0f} docs/s ({r['corpus_speedup_vs_torch']:.1f}x) "
            f"| {r['ingest_docs_per_s']:.0f} docs/s | {r['pair_error'] * 100:.2f}% "
            f"({d['mean'] * 100:+.2f} pt, {d['ci95'][0] * 100:+.2f}..{d['ci95'][1] * 100:+.2f}) |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
