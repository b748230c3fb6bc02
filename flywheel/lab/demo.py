"""`flywheel demo`: the whole loop on real data (Quora by default), in one command, through the real HTTP API.

A fresh data dir gets a world's corpus (`flywheel.lab.worlds.load_world`: the shipped Quora set by default,
or SciFact, or a BEIR folder); an in-process server on a free loopback port serves it; simulated users
(flywheel.lab.simulate) ask the world's traffic queries through HTTP (its check queries stay unseen); one
cycle runs through `POST /cycles` exactly as in production (whatever the default cycle mode is); then the
before/after table, the gate's decision and the report's path are printed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.cycle.report.files import report_html_path
from flywheel.cycle.runner import resolve_mode
from flywheel.errors import FlywheelError, InvalidInput
from flywheel.formats.beir import RetrievalSet, load_beir
from flywheel.lab.simulate import UserModel, simulate
from flywheel.util.packaged import QUORA_DEMO
from flywheel.util.progress import progress_bar

DEMO_DATA = QUORA_DEMO
MARKER = ".flywheel-demo"  # written first into a demo dir, so --force only ever wipes a demo's own folder

# Settings the demo runs with unless a FLYWHEEL_* variable says otherwise (the rest keep their defaults).
# Each is a normal setting a deployment could choose; none touches how the gate decides.
DEMO_SETTINGS: dict[str, Any] = {
    # The demo has one burst of traffic rather than months of it: hold out more query groups than the
    # default 20% so the held-out error has a CI narrow enough to show a real change.
    "heldout_percent": 40,
}
# Added only when the cycle fine-tunes the whole model (not in adapter mode, which has its own defaults):
# a capped number of small steps at a learning rate above the library default, sized for a 2-core CPU.
FULL_FINETUNE_SETTINGS: dict[str, Any] = {
    "train_learning_rate": 1e-4,
    "train_batch_size": 16,
    "train_max_steps": 100,
}


@dataclass(frozen=True)
class DemoPlan:
    """How much traffic the demo simulates, and how its users behave."""

    queries: int = 3000
    rounds: int = 1
    seed: int = 0
    user: UserModel = field(default_factory=UserModel)
    ingest_batch: int = 256


@dataclass
class DemoResult:
    """What the demo measured: the cycle's report plus the demo's own counts and timings."""

    report: dict[str, Any]
    report_html: Path
    simulation: dict[str, int]
    timings: dict[str, float]
    rows: list[list[str]] = field(default_factory=list)

    @property
    def decision(self) -> str:
        """promoted, rejected or failed."""
        return str(self.report.get("decision"))


def demo_settings(data_dir: Path, **overrides: Any) -> Settings:
    """The demo's settings on `data_dir`: arguments win over FLYWHEEL_* variables, which win over the demo's own.

    A throw-away admin key protects the demo server's routes (the demo's own client sends it).
    """

    def unset(values: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in values.items() if f"FLYWHEEL_{k.upper()}" not in os.environ and k not in overrides}

    values = {**unset(DEMO_SETTINGS), "admin_keys": [secrets.token_hex(16)], "search_keys": [], **overrides}
    settings = Settings(data_dir=data_dir, **values)
    if settings.train_frozen_dense or resolve_mode(settings) == "adapter":  # the CPU training caps are for full cycles
        return settings
    return Settings(data_dir=data_dir, **values, **unset(FULL_FINETUNE_SETTINGS))


def prepare_data_dir(data_dir: Path, force: bool = False) -> None:
    """Make sure `data_dir` is empty (or a previous demo's folder and `force`), then mark it as a demo dir.

    Raises:
        InvalidInput: the folder holds something else, or a previous demo without `force`.
    """
    if data_dir.exists() and not data_dir.is_dir():
        raise InvalidInput(f"{data_dir} is a file; the demo needs an empty folder")
    if data_dir.is_dir() and any(data_dir.iterdir()):
        if not (data_dir / MARKER).is_file():
            raise InvalidInput(
                f"{data_dir} is not empty and was not made by `flywheel demo`; choose a new folder with --data-dir"
            )
        if not force:
            raise InvalidInput(f"{data_dir} holds a previous demo; pass --force to replace it")
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / MARKER).write_text("made by `flywheel demo`; `flywheel demo --force` may delete this folder\n")


def load_world(folder: Path = DEMO_DATA) -> RetrievalSet:
    """A BEIR folder whole, check queries included (default: shipped Quora); the demo runs on a World's traffic."""
    return load_beir(folder)


@contextmanager
def serve_in_thread(settings: Settings) -> Iterator[httpx.Client]:
    """Run the real app under uvicorn on a free loopback port; yield an authorised HTTP client for it."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="demo-server", daemon=True)
    thread.start()
    try:
        while not server.started:
            if not thread.is_alive():
                raise FlywheelError("the demo server did not start (see the log above)")
            time.sleep(0.05)
        key = settings.admin_keys[0]
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600.0) as http:
            yield http
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def run_demo(settings: Settings, world: RetrievalSet, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Ingest, simulate, run one cycle, and collect the before/after numbers.

    Args:
        settings: from `demo_settings` (the data dir must be prepared).
        world: corpus, queries and judgements (the `traffic()` of a `flywheel.lab.worlds.World`).
        plan: traffic size and user behaviour.
        console: where progress and stage messages go (None: silent).

    Returns:
        The report, its HTML path, the simulation counts, timings and the table rows.

    Raises:
        FlywheelError: the server answered an error (the message says which call).
    """
    say = console.print if console else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    queries = dict(list(world.queries.items())[: plan.queries])
    with serve_in_thread(settings) as http:
        t0 = time.monotonic()
        _ingest(http, world, plan.ingest_batch, console)
        timings["ingest_s"] = time.monotonic() - t0
        say(f"ingested {len(world.corpus):,} documents through POST /documents ({timings['ingest_s']:.0f} s)")

        t0 = time.monotonic()
        sim = simulate(http, queries, world.relevant, plan.user, plan.seed, plan.rounds, progress=console is not None)
        timings["simulate_s"] = time.monotonic() - t0
        say(
            f"simulated {sim.searches:,} searches: {sim.clicks:,} clicks ({sim.wrong_clicks} wrong), "
            f"{sim.skips:,} skips, {sim.abandoned:,} without a click ({timings['simulate_s']:.0f} s)"
        )

        t0 = time.monotonic()
        cycle_id = _call(http, "POST", "/cycles")["cycle_id"]
        _wait_for_cycle(http, cycle_id, console)
        timings["cycle_s"] = time.monotonic() - t0
        report = _call(http, "GET", f"/reports/{cycle_id}")
    html = report_html_path(settings.reports_dir, cycle_id)
    result = DemoResult(report, html, vars(sim), {k: round(v, 1) for k, v in timings.items()})
    result.rows = table_rows(report)
    return result


def _ingest(http: httpx.Client, world: RetrievalSet, batch: int, console: Console | None) -> None:
    """POST the corpus in batches, with a progress bar."""
    docs = [{"id": d.id, "text": d.text} for d in world.corpus]
    bar = progress_bar(transient=True) if console else None
    with bar or nullcontext():
        task = bar.add_task("embedding the corpus", total=len(docs)) if bar else None
        for start in range(0, len(docs), batch):
            _call(http, "POST", "/documents", json={"documents": docs[start : start + batch]})
            if bar:
                bar.advance(task, len(docs[start : start + batch]))


def _wait_for_cycle(http: httpx.Client, cycle_id: str, console: Console | None, poll_s: float = 1.0) -> None:
    """Poll GET /cycles/{id}, showing the current stage, until the cycle has finished."""
    with Progress(disable=console is None, transient=True) as bar:
        task = bar.add_task("cycle: queued", total=None)
        while True:
            record = _call(http, "GET", f"/cycles/{cycle_id}")
            if record["state"] not in ("queued", "running"):
                return
            bar.update(task, description=f"cycle: {record.get('stage') or record['state']}")
            time.sleep(poll_s)


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise FlywheelError(f"{method} {path} answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The before/after rows: metric, incumbent, candidate, change with its 95% CI, and what it was measured on."""
    rows: list[list[str]] = []
    pair = (report.get("metrics") or {}).get("pair_error")
    if pair:
        inc, cand = pair["incumbent"], pair["candidate"]
        lo, hi = pair["delta_ci95"]
        rows.append(
            [
                "pair error",
                _pct(inc["error_rate"], inc["ci95"]),
                _pct(cand["error_rate"], cand["ci95"]),
                f"{pair['delta_error'] * 100:+.1f} pt [{lo * 100:+.1f}, {hi * 100:+.1f}]",
                f"{pair['n_test']} held-out pairs",
            ]
        )
    else:
        rows.append(["pair error", "not measured", "", "", "too few held-out pairs"])
    retrieval = (report.get("metrics") or {}).get("retrieval")
    for name in ("ndcg@10", "mrr@10"):
        if retrieval and name in retrieval:
            m = retrieval[name]
            lo, hi = m["ci95"]
            rows.append(
                [
                    _LABELS[name],
                    f"{m['incumbent']:.3f}",
                    f"{m['candidate']:.3f}",
                    f"{m['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                    f"{retrieval['n_queries']} held-out queries",
                ]
            )
        else:
            rows.append([_LABELS[name], "not measured", "", "", "measured only once pair error passes"])
    return rows


_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10"}


def _pct(value: float, ci: list[float]) -> str:
    return f"{value * 100:.1f}% [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


def print_result(console: Console, result: DemoResult) -> None:
    """The before/after table, the decision with its reasons, and where the report is."""
    table = Table(title="held-out queries: serving model (before) vs the cycle's candidate (after)")
    for header in ("metric", "before [95% CI]", "after [95% CI]", "change [95% CI]", "on"):
        table.add_column(header)
    for row in result.rows:
        table.add_row(*row)
    console.print(table)
    report = result.report
    counts = report.get("counts") or {}
    if counts:
        console.print(
            f"mined {counts.get('pairs', 0):,} pairs ({counts.get('positives', 0):,} clicks, "
            f"{counts.get('negatives', 0):,} skips) from {counts.get('searches', 0):,} searches: "
            f"{counts.get('train_pairs', 0):,} to train on, {counts.get('heldout_pairs', 0):,} held out "
            f"({counts.get('heldout_queries', 0):,} query groups)"
        )
    if result.decision == "promoted":
        console.print(
            f"decision: [green]PROMOTED[/green]: {report['serving_after']} now serves (was {report['incumbent']})"
        )
    else:
        console.print(f"decision: [red]{result.decision.upper()}[/red]: {report['incumbent']} keeps serving")
    for reason in report.get("reasons") or []:
        console.print(f"  - {reason}", highlight=False)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in (report.get("timings") or {}).items())
    console.print(f"cycle stages: {stages}")
    console.print(f"report: {result.report_html}")
