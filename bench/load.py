"""Load and fault bench: feedback storm, searches during swaps, kill -9 in training and mid-swap.

    python bench/load.py                       # full: 50 clients x 1,000 events, 10% duplicate ids
    python bench/load.py --clients 10 --events 200 --skip-faults   # quick look

The server is real uvicorn over real sockets. For the storm and the swap it runs in this process (the swap
is driven through the Service, as a cycle does); the fault runs use `flywheel serve` child processes.
Uses the tiny test model so that the figures measure the service (DuckDB, Qdrant, HTTP), not the encoder.
Prints tables and writes bench/results/load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flywheel.api.app import create_app  # noqa: E402
from flywheel.config import Settings  # noqa: E402
from flywheel.lab.loadtest import feedback_storm, mismatches, percentiles_ms, search_storm  # noqa: E402
from flywheel.lab.simulate import UserModel, simulate  # noqa: E402
from tests.helpers.factories import make_documents, world_documents, world_queries  # noqa: E402
from tests.helpers.server import KILL_IN_SWAP, ServerProcess, second_version, serve_in_thread  # noqa: E402
from tests.helpers.tiny_model import build_tiny_model  # noqa: E402

console = Console(width=150)
SEARCH = {"Authorization": "Bearer srch"}
ADMIN = {"Authorization": "Bearer adm"}


def storm(root: Path, model: Path, clients: int, events: int, dup: float) -> dict:
    settings = Settings(data_dir=root / "storm", base_model=str(model), admin_keys=["adm"], search_keys=["srch"])
    with serve_in_thread(create_app(settings)) as url:
        httpx.post(f"{url}/documents", json={"documents": make_documents()}, headers=ADMIN).raise_for_status()
        load = feedback_storm(url, clients, events, dup, batch_size=10, headers=SEARCH)
        stored = httpx.get(f"{url}/stats", headers=SEARCH).json()["events"]
    return {**load.summary(), "stored": stored, "exact": stored == load.unique_events}


def swaps(root: Path, model: Path, clients: int, n_swaps: int) -> dict:
    settings = Settings(data_dir=root / "swap", base_model=str(model), admin_keys=["adm"], search_keys=["srch"])
    app = create_app(settings)
    with serve_in_thread(app) as url:
        httpx.post(f"{url}/documents", json={"documents": world_documents()}, headers=ADMIN).raise_for_status()
        service = app.state.service
        query = "which guitar is good for a dog"
        v1, v2, expected = second_version(service, root / "other", query)
        # Baseline first, same clients, no swaps: the swaps' cost is the ratio of the two.
        base, _ = search_storm(url, clients, query, 5, lambda: time.sleep(5), headers=SEARCH)

        def swap_loop() -> None:
            for i in range(n_swaps):
                service.swap(v2 if i % 2 == 0 else v1)
                time.sleep(0.1)

        load, _ = search_storm(url, clients, query, 5, swap_loop, headers=SEARCH)
    base_p = percentiles_ms(base.latencies_s)
    swap_p = percentiles_ms(load.latencies_s)
    return {
        "clients": clients,
        "swaps": n_swaps,
        "answers": len(load.answers),
        "failed": len(load.failures),
        "mismatched": mismatches(load, expected),
        "versions_seen": sorted({v for v, _ in load.answers}),
        "baseline": {**base_p, "searches_per_s": round(len(base.latencies_s) / base.wall_s, 1)},
        "during_swaps": {**swap_p, "searches_per_s": round(len(load.latencies_s) / load.wall_s, 1)},
        "p50_ratio": round(swap_p["p50_ms"] / base_p["p50_ms"], 2),
        "p99_ratio": round(swap_p["p99_ms"] / base_p["p99_ms"], 2),
    }


def faults(root: Path, model: Path) -> list[dict]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FLYWHEEL_BASE_MODEL": str(model),
        "FLYWHEEL_CYCLE_MODE": "full",  # faults in training and the re-embedding swap
        "FLYWHEEL_TRAIN_LEARNING_RATE": "2e-3",
        "FLYWHEEL_TRAIN_EPOCHS": "2",
        "FLYWHEEL_TRAIN_MAX_STEPS": "12",
        "FLYWHEEL_TRAIN_BATCH_SIZE": "16",
        "FLYWHEEL_MIN_HELDOUT_PAIRS": "10",
        "FLYWHEEL_HELDOUT_PERCENT": "25",
        "FLYWHEEL_MIN_IMPROVEMENT": "0",
        "FLYWHEEL_REQUIRE_SIGNIFICANT": "false",
        "FLYWHEEL_MAX_NDCG_DROP": "1",
    }
    data = root / "faults" / "data"
    rows = []
    server = ServerProcess(data, env)
    http = httpx.Client(base_url=server.url, timeout=120)
    http.post("/documents", json={"documents": world_documents()}).raise_for_status()
    queries, relevant = world_queries()
    simulate(http, queries, relevant, UserModel(click_prob=1.0, decay=1.0, wrong_click=0, no_click=0), rounds=1)

    def after_restart(kind: str, cycle_id: str, t_kill: float) -> dict:
        t0 = time.monotonic()
        server = ServerProcess(data, env)
        restart_s = time.monotonic() - t0
        h = httpx.Client(base_url=server.url, timeout=120)
        versions = {v["version"]: v["status"] for v in h.get("/models").json()["versions"]}
        leftovers = [p.name for p in (data / "models").iterdir() if p.name.startswith(".")]
        row = {
            "fault": kind,
            "serving_after_restart": h.get("/healthz").json()["model_version"],
            "killed_cycle_state": h.get(f"/cycles/{cycle_id}").json()["state"],
            "registry": versions,
            "leftover_dirs": leftovers,
            "alias_consistent": "flywheel_alias_consistent 1.0" in h.get("/metrics").text,
            "restart_s": round(restart_s, 1),
            "killed_after_s": round(t_kill, 1),
        }
        return server, h, row

    c1 = http.post("/cycles").json()["cycle_id"]
    t0 = time.monotonic()
    while http.get(f"/cycles/{c1}").json()["stage"] != "train":
        time.sleep(0.05)
    time.sleep(2)
    server.kill9()
    server, http, row = after_restart("kill -9 during training", c1, time.monotonic() - t0)
    rows.append(row)
    server.stop()

    server = ServerProcess(data, env, inject=KILL_IN_SWAP)
    c2 = httpx.post(f"{server.url}/cycles").json()["cycle_id"]
    t0 = time.monotonic()
    server.proc.wait(timeout=600)
    server, http, row = after_restart("kill -9 after the alias moved", c2, time.monotonic() - t0)
    rows.append(row)

    c3 = http.post("/cycles").json()["cycle_id"]
    while (record := http.get(f"/cycles/{c3}").json())["state"] in ("queued", "running"):
        time.sleep(0.5)
    rows.append(
        {
            "fault": "next cycle (no fault)",
            "killed_cycle_state": record["state"],
            "serving_after_restart": http.get("/healthz").json()["model_version"],
        }
    )
    server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--events", type=int, default=1000, help="feedback events per client")
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--search-clients", type=int, default=16)
    parser.add_argument("--swaps", type=int, default=40)
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "load.json")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="flywheel-load-"))
    model = build_tiny_model(root / f"tiny-{uuid.uuid4().hex[:6]}")
    results: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}, no GPU",
        "python": platform.python_version(),
        "model": "tiny test BERT (tests/helpers/tiny_model.py)",
    }

    console.print(f"feedback storm: {args.clients} clients x {args.events} events, {args.duplicates:.0%} duplicates")
    s = results["feedback"] = storm(root, model, args.clients, args.events, args.duplicates)
    table = Table("clients", "requests", "events sent", "unique", "stored", "accepted", "duplicates", "5xx",
                  "events/s", "p50 ms", "p99 ms")  # fmt: skip
    keys = ("clients", "requests", "events_sent", "unique_events", "stored", "accepted", "duplicates")
    keys += ("server_errors", "events_per_s", "p50_ms", "p99_ms")
    table.add_row(*(str(s[k]) for k in keys))
    console.print(table)

    console.print(f"searches during swaps: {args.search_clients} clients, {args.swaps} swaps")
    w = results["swap"] = swaps(root, model, args.search_clients, args.swaps)
    table = Table("phase", "answers", "failed", "mismatched", "searches/s", "p50 ms", "p99 ms")
    table.add_row("baseline", "", "", "", *(str(w["baseline"][k]) for k in ("searches_per_s", "p50_ms", "p99_ms")))
    table.add_row("during swaps", str(w["answers"]), str(w["failed"]), str(w["mismatched"]),
                  *(str(w["during_swaps"][k]) for k in ("searches_per_s", "p50_ms", "p99_ms")))  # fmt: skip
    console.print(table)

    if not args.skip_faults:
        console.print("kill -9 faults (flywheel serve child processes)")
        rows = results["faults"] = faults(root, model)
        table = Table("fault", "serving after restart", "killed cycle", "leftover dirs", "alias ok", "restart s")
        for r in rows:
            extra = (str(r.get(k, "")) for k in ("leftover_dirs", "alias_consistent", "restart_s"))
            table.add_row(r["fault"], r["serving_after_restart"], r["killed_cycle_state"], *extra)
        console.print(table)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
