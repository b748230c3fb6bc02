"""Feedback ingest: events/s through HTTP (`flywheel serve`), one event per request vs batches, vs Store.add_events.

Setup: a fresh data dir whose DuckDB already holds S searches with 10 impressions each (written with
Store.log_search, so no model is involved). Then, through HTTP, E1 events one per request and E2 events in
batches of B; the count check reads /stats and fails the run if any event was lost or doubled. The baseline
is the same events written in-process with Store.add_events (one call per event, then per batch of B) on an
identical copy of the database: the ratio says what HTTP and the service add; and the same rows appended to
DuckDB with no validation at all (one Arrow append per batch) on a third copy: what validation costs. Because the cores
are shared, CPU seconds are counted too (client + server process), and events per CPU-second are reported
beside events per wall-clock second.

    .venv/bin/python bench/feedback_ingest.py [--single 1000] [--batched 20000] [--batch-size 100]

Prints a table and writes bench/results/feedback_ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import httpx
import psutil
import pyarrow as pa

from flywheel.serve.store import Store
from flywheel.types import Event, Impression

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def seed_searches(db_file: Path, n_searches: int) -> None:
    """A DuckDB file with n searches, each showing documents d0..d9."""
    db_file.parent.mkdir(parents=True, exist_ok=True)
    store = Store(db_file)
    try:
        for i in range(n_searches):
            hits = [Impression(rank=r + 1, doc_id=f"d{r}", score=1.0 - r / 10) for r in range(10)]
            store.log_search(f"s{i}", f"query {i}", 10, "bench", hits)
    finally:
        store.close()


def make_events(prefix: str, n: int, n_searches: int) -> list[Event]:
    """n distinct events spread over the searches (alternating clicks and skips on shown documents)."""
    return [
        Event(f"{prefix}{i}", f"s{i % n_searches}", f"d{(i // n_searches) % 10}", "click" if i % 2 else "skip")
        for i in range(n)
    ]


def _body(events: list[Event]) -> dict:
    return {"events": [{"event_id": e.event_id, "search_id": e.search_id, "doc_id": e.doc_id, "type": e.type}
                       for e in events]}  # fmt: skip


def run_http(data_dir: Path, single: list[Event], batched: list[Event], batch_size: int) -> dict:
    """Post the events to a `flywheel serve` process and check /stats counts every one exactly once."""
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FLYWHEEL_LOG_LEVEL": "warning"}
    cmd = [sys.executable, "-m", "flywheel", "serve", "--data-dir", str(data_dir), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
        _wait_healthy(http)
        server = psutil.Process(proc.pid)
        cpu = _Cpu(server)
        accepted = 0
        for e in single:
            r = http.post("/feedback", json=_body([e]))
            r.raise_for_status()
            accepted += r.json()["accepted"]
        single_t = cpu.lap()
        for start in range(0, len(batched), batch_size):
            r = http.post("/feedback", json=_body(batched[start : start + batch_size]))
            r.raise_for_status()
            accepted += r.json()["accepted"]
        batched_t = cpu.lap()
        stored = http.get("/stats").json()["events"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return _rates(single_t, batched_t, len(single), len(batched), accepted, stored)


def run_direct(db_file: Path, single: list[Event], batched: list[Event], batch_size: int) -> dict:
    """The same events through Store.add_events in this process: the floor under the HTTP path."""
    store = Store(db_file)
    try:
        cpu = _Cpu(None)
        accepted = 0
        for e in single:
            accepted += store.add_events([e])[0]
        single_t = cpu.lap()
        for start in range(0, len(batched), batch_size):
            accepted += store.add_events(batched[start : start + batch_size])[0]
        batched_t = cpu.lap()
        stored = store.stats()["events"]
    finally:
        store.close()
    return _rates(single_t, batched_t, len(single), len(batched), accepted, stored)


def run_bare(db_file: Path, single: list[Event], batched: list[Event], batch_size: int) -> dict:
    """The same rows appended to DuckDB's events table with no validation, one transaction per batch (an Arrow
    table per statement): what the disk and DuckDB allow, the ceiling over both paths above."""
    con = duckdb.connect(str(db_file))
    try:
        cpu = _Cpu(None)

        def append(events: list[Event]) -> None:
            now = datetime.now(UTC).replace(tzinfo=None)
            rows = pa.table(
                {
                    "event_id": [e.event_id for e in events],
                    "search_id": [e.search_id for e in events],
                    "doc_id": [e.doc_id for e in events],
                    "type": [e.type for e in events],
                    "ts": pa.array([now] * len(events), pa.timestamp("us")),
                }
            )
            con.execute("BEGIN TRANSACTION")
            con.register("_rows", rows)
            con.execute("INSERT INTO events SELECT event_id, search_id, doc_id, type, ts, ts FROM _rows")
            con.unregister("_rows")
            con.execute("COMMIT")

        for e in single:
            append([e])
        single_t = cpu.lap()
        for start in range(0, len(batched), batch_size):
            append(batched[start : start + batch_size])
        batched_t = cpu.lap()
        stored = con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()
    n = len(single) + len(batched)
    return _rates(single_t, batched_t, len(single), len(batched), n, stored)


class _Cpu:
    """Wall-clock and CPU seconds (this process plus an optional server process) between laps."""

    def __init__(self, server: psutil.Process | None) -> None:
        self.server = server
        self.last = self._now()

    def _now(self) -> tuple[float, float]:
        cpu = time.process_time()
        if self.server is not None:
            times = self.server.cpu_times()
            cpu += times.user + times.system
        return time.perf_counter(), cpu

    def lap(self) -> tuple[float, float]:
        now = self._now()
        wall, cpu = now[0] - self.last[0], now[1] - self.last[1]
        self.last = now
        return wall, cpu


def _rates(
    single: tuple[float, float], batched: tuple[float, float], n_single: int, n_batched: int, accepted: int, stored: int
) -> dict:
    return {
        "single_events_per_s": n_single / single[0],
        "batched_events_per_s": n_batched / batched[0],
        "single_events_per_cpu_s": n_single / single[1],
        "batched_events_per_cpu_s": n_batched / batched[1],
        "sent": n_single + n_batched,
        "accepted": accepted,
        "stored": stored,
        "lost": n_single + n_batched - stored,
    }


def _wait_healthy(http: httpx.Client) -> None:
    for _ in range(1500):
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("flywheel serve did not become healthy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--searches", type=int, default=2000)
    parser.add_argument("--single", type=int, default=1000, help="events sent one per request")
    parser.add_argument("--batched", type=int, default=20000, help="events sent in batches")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "feedback_ingest.json")
    args = parser.parse_args()
    single = make_events("single-", args.single, args.searches)
    batched = make_events("batch-", args.batched, args.searches)
    with tempfile.TemporaryDirectory() as tmp:
        seeded = Path(tmp) / "seed" / "flywheel.duckdb"
        seed_searches(seeded, args.searches)
        from flywheel.config import Settings

        api_dir = Path(tmp) / "api"
        api_db = Settings(data_dir=api_dir).db_file
        api_db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(seeded, api_db)
        direct_db = Path(tmp) / "direct.duckdb"
        shutil.copy(seeded, direct_db)
        bare_db = Path(tmp) / "bare.duckdb"
        shutil.copy(seeded, bare_db)
        http = run_http(api_dir, single, batched, args.batch_size)
        direct = run_direct(direct_db, single, batched, args.batch_size)
        bare = run_bare(bare_db, single, batched, args.batch_size)
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "searches": args.searches,
        "batch_size": args.batch_size,
        "http": http,
        "direct": direct,
        "bare_duckdb_append": bare,
        "batched_ratio_http_over_bare": http["batched_events_per_s"] / bare["batched_events_per_s"],
        "single_ratio_http_over_direct": http["single_events_per_s"] / direct["single_events_per_s"],
        "batched_ratio_http_over_direct": http["batched_events_per_s"] / direct["batched_events_per_s"],
        "single_cpu_ratio_http_over_direct": http["single_events_per_cpu_s"] / direct["single_events_per_cpu_s"],
        "batched_cpu_ratio_http_over_direct": http["batched_events_per_cpu_s"] / direct["batched_events_per_cpu_s"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"feedback ingest, {args.single} single + {args.batched} batched events, batch {args.batch_size}")
    print(f"({result['machine']})")
    print(f"{'path':<26}{'single ev/s':>12}{'batched ev/s':>13}{'single ev/CPU-s':>16}{'batched ev/CPU-s':>17}"
          f"{'sent':>7}{'stored':>7}{'lost':>5}")  # fmt: skip
    paths = (("HTTP (flywheel serve)", http), ("Store.add_events direct", direct), ("bare DuckDB append", bare))
    for name, r in paths:
        print(
            f"{name:<26}{r['single_events_per_s']:>12.0f}{r['batched_events_per_s']:>13.0f}"
            f"{r['single_events_per_cpu_s']:>16.0f}{r['batched_events_per_cpu_s']:>17.0f}"
            f"{r['sent']:>7}{r['stored']:>7}{r['lost']:>5}"
        )
    print(
        f"HTTP / direct, wall: single {result['single_ratio_http_over_direct']:.2f}x, "
        f"batched {result['batched_ratio_http_over_direct']:.2f}x; per CPU-second: single "
        f"{result['single_cpu_ratio_http_over_direct']:.2f}x, "
        f"batched {result['batched_cpu_ratio_http_over_direct']:.2f}x"
    )
    print(f"HTTP / bare DuckDB append, batched: {result['batched_ratio_http_over_bare']:.2f}x")
    if http["lost"] or direct["lost"] or bare["lost"] or http["accepted"] != http["sent"]:
        sys.exit("count check failed: events were lost or doubled")


if __name__ == "__main__":
    main()
