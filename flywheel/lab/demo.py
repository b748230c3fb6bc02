"""`flywheel demo`: the whole loop on real data (SciFact by default), in one command, through the real HTTP API.

A fresh data dir gets a world's corpus (`flywheel.lab.worlds.load_world`: the shipped SciFact set by default,
or Quora, or a BEIR folder); an in-process server on a free loopback port serves it; simulated users
(flywheel.lab.simulate) ask the world's traffic queries through HTTP (its check queries stay unseen); one
cycle runs through `POST /cycles` exactly as in production (whatever the default cycle mode is); then the
gate's two views, its decision, and what serves before and after on the check queries no cycle saw (with a
paired 95% CI) are printed.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import Progress

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.cycle.report.files import report_html_path
from flywheel.cycle.runner import resolve_mode
from flywheel.errors import FlywheelError, InvalidInput
from flywheel.formats.beir import RetrievalSet, load_beir
from flywheel.lab.check import compare_check, serving_scores
from flywheel.lab.simulate import Traffic, UserModel, simulate_traffic
from flywheel.lab.worlds import World
from flywheel.serve.service import Service
from flywheel.util.packaged import QUORA_DEMO
from flywheel.util.progress import progress_bar

DEMO_DATA = QUORA_DEMO
MARKER = ".flywheel-demo"  # written first into a demo dir, so --force only ever wipes a demo's own folder

# Settings the demo runs with unless a FLYWHEEL_* variable says otherwise (the rest keep their defaults).
# Each is a normal setting a deployment could choose; none touches how the gate decides.
DEMO_SETTINGS: dict[str, Any] = {}
# Added only when the cycle fine-tunes the whole model (not in adapter mode, which has its own defaults):
# a capped number of small steps at a learning rate above the library default, sized for a 2-core CPU.
FULL_FINETUNE_SETTINGS: dict[str, Any] = {
    "train_learning_rate": 1e-4,
    "train_batch_size": 16,
    "train_max_steps": 100,
}


# The demo's users: position-based examination (rank r is looked at with probability 1/r), 5% misclicks
# per result looked at, 5% who leave at once, some thumbs (see flywheel.lab.simulate).
DEMO_USER = UserModel(click_prob=0.9, examination="pbm", eta=1.0, thumbs_up=0.1, thumbs_down=0.02)


@dataclass(frozen=True)
class DemoPlan:
    """How much traffic the demo simulates, and how its users behave."""

    queries: int = 3000  # at most this many distinct traffic queries
    traffic: Traffic = field(default_factory=lambda: Traffic(rounds=3, user=DEMO_USER))
    seed: int = 0
    ingest_batch: int = 256
    live_searches: int = 500  # searches per burst of live traffic while the candidate is tested online


@dataclass
class DemoResult:
    """What the demo measured: the cycle's report plus the demo's own counts and timings."""

    report: dict[str, Any]
    report_html: Path
    simulation: dict[str, int]
    timings: dict[str, float]
    rows: list[list[str]] = field(default_factory=list)
    check: dict[str, Any] | None = None  # what serves before vs after on the check queries (compare_check)

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
def serve_in_thread(settings: Settings) -> Iterator[tuple[httpx.Client, Service]]:
    """Run the real app under uvicorn on a free loopback port; yield an authorised HTTP client for it and the
    app's Service (the demo judges check queries in-process, so they never enter the search log)."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(settings)
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
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
            yield http, app.state.service
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()


def run_demo(settings: Settings, world: World, plan: DemoPlan, console: Console | None = None) -> DemoResult:
    """Ingest, simulate traffic, run one cycle, and judge what serves before and after on the check queries.

    Args:
        settings: from `demo_settings` (the data dir must be prepared).
        world: corpus, traffic queries (users ask them) and check queries (no cycle sees them).
        plan: traffic size and user behaviour.
        console: where progress and stage messages go (None: silent).

    Returns:
        The report, its HTML path, the simulation counts, timings, the table rows and the check comparison.

    Raises:
        FlywheelError: the server answered an error (the message says which call).
    """
    say = console.print if console else (lambda *a, **k: None)
    timings: dict[str, float] = {}
    traffic = world.traffic()
    queries = dict(list(traffic.queries.items())[: plan.queries])
    with serve_in_thread(settings) as (http, service):
        t0 = time.monotonic()
        _ingest(http, traffic, plan.ingest_batch, console)
        timings["ingest_s"] = time.monotonic() - t0
        say(f"ingested {len(traffic.corpus):,} documents through POST /documents ({timings['ingest_s']:.0f} s)")
        before = serving_scores(service, world.check_queries, world.check_relevant) if world.check_queries else None

        t0 = time.monotonic()
        sim = simulate_traffic(http, queries, traffic.relevant, plan.traffic, plan.seed, progress=console is not None)
        timings["simulate_s"] = time.monotonic() - t0
        say(
            f"simulated {sim.searches:,} searches of {sim.distinct_queries:,} queries: {sim.clicks:,} clicks "
            f"({sim.wrong_clicks} on irrelevant results), {sim.skips:,} skips, {sim.abandoned:,} without a click "
            f"({timings['simulate_s']:.0f} s)"
        )

        t0 = time.monotonic()
        cycle_id = _call(http, "POST", "/cycles")["cycle_id"]
        bursts = iter(range(1, 10**6))

        def live() -> None:  # the same users go on asking while the candidate is tested on their searches
            burst = replace(plan.traffic, searches=plan.live_searches, rounds=1)
            simulate_traffic(http, queries, traffic.relevant, burst, plan.seed + 1000 * next(bursts))

        _wait_for_cycle(http, cycle_id, console, live=live)
        timings["cycle_s"] = time.monotonic() - t0
        report = _call(http, "GET", f"/reports/{cycle_id}")
        after = serving_scores(service, world.check_queries, world.check_relevant) if before is not None else None
    html = report_html_path(settings.reports_dir, cycle_id)
    result = DemoResult(report, html, vars(sim), {k: round(v, 1) for k, v in timings.items()})
    result.rows = table_rows(report)
    if before is not None and after is not None:
        result.check = compare_check(before, after, seed=settings.seed)
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


def _wait_for_cycle(
    http: httpx.Client,
    cycle_id: str,
    console: Console | None,
    poll_s: float = 1.0,
    live: Callable[[], None] | None = None,
) -> None:
    """Poll GET /cycles/{id}, showing the current stage, until the cycle has finished; while it tests its
    candidate online, call `live` (a burst of user traffic) between looks."""
    with Progress(disable=console is None, transient=True) as bar:
        task = bar.add_task("cycle: queued", total=None)
        while True:
            record = _call(http, "GET", f"/cycles/{cycle_id}")
            if record["state"] not in ("queued", "running", "testing"):
                return
            if record["state"] == "testing" and record.get("online"):
                bar.update(task, description=f"online test: {online_line(record['online'])}")
                if live is not None:
                    live()
                    continue
            else:
                bar.update(task, description=f"cycle: {record.get('stage') or record['state']}")
            time.sleep(poll_s)


def online_line(online: dict[str, Any]) -> str:
    """One line on an online test: its searches and, interleaving, the candidate's record and win share."""
    if online.get("mode") == "shadow":
        top = online.get("top3_changed")
        changed = f", top 3 would change for {top:.0%}" if top is not None else ""
        return f"shadow, {online['searches']:,} searches{changed}"
    share = online.get("win_share")
    band = online.get("band") or [None, None]
    text = f"{online['searches']:,} interleaved searches: {online['wins']} won, {online['losses']} lost, "
    text += f"{online['ties']} tied"
    if share is not None and None not in band:
        text += f", win share {share:.2f} [{band[0]:.2f}, {band[1]:.2f}]"
    return text


def _call(http: httpx.Client, method: str, path: str, **kwargs: Any) -> Any:
    response = http.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise FlywheelError(f"{method} {path} answered HTTP {response.status_code}: {response.text[:300]}")
    return response.json()


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    """The gate's before/after rows: measure, incumbent, candidate, change with its 95% CI, and on what."""
    metrics = report.get("metrics") or {}
    rows: list[list[str]] = []
    for key, label in (("next_traffic", "next traffic"), ("retrieval", "unseen queries")):
        view = metrics.get(key)
        view = (view.get("judged") or view) if view else view  # what the gate reads (gate_ranking "judged")
        if not view or "ndcg@10" not in view:
            rows.append([f"nDCG@10, {label}", "not measured", "", "", _UNMEASURED[key]])
            continue
        m = view["ndcg@10"]
        lo, hi = m["ci95"]
        mde = (view.get("mde") or {}).get("ndcg@10")
        rows.append(
            [
                f"nDCG@10, {label}",
                f"{m['incumbent']:.3f}",
                f"{m['candidate']:.3f}",
                f"{m['delta']:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                f"{view['n_queries']} held-out searches" + (f" (detectable: {mde:.3f})" if mde else ""),
            ]
        )
    pair = metrics.get("pair_error")
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
    return rows


_UNMEASURED = {
    "next_traffic": "no search of the latest window has a click",
    "retrieval": "no held-out query has a click (or the gate stopped first)",
}


def _pct(value: float, ci: list[float]) -> str:
    return f"{value * 100:.1f}% [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]"


def check_line(check: dict[str, Any]) -> str:
    """One line on what serves before and after the cycle, on the check queries no cycle saw."""
    m = check["delta"]["ndcg@10"]
    lo, hi = m["ci95"]
    before, after = check["incumbent"]["ndcg@10"], check["candidate"]["ndcg@10"]
    relative = f" ({m['relative'] * 100:+.1f}%)" if m.get("relative") is not None else ""
    verdict = "better" if lo > 0 else ("worse" if hi < 0 else "no change the CI can tell")
    return (
        f"check queries no cycle saw ({check['n_queries']}): nDCG@10 {before:.3f} -> {after:.3f}{relative}, "
        f"95% CI of the change {lo:+.3f}..{hi:+.3f}: {verdict}"
    )


def print_result(console: Console, result: DemoResult) -> None:
    """The before/after table, the decision with its reasons, and where the report is."""
    console.print("the gate's held-out feedback: before (what serves) -> after (the candidate), change [95% CI]")
    width = max(len(row[0]) for row in result.rows)
    for name, before, after, change, on in result.rows:
        arrow = f"{before} -> {after}" if after else before
        console.print(f"  {name:<{width}}  {arrow:<32} {change:<26} {on}", highlight=False)
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
    online = report.get("online")
    if isinstance(online, dict):
        console.print(f"online test ({online.get('mode')}): {online.get('reason')}", highlight=False)
    if result.check is not None:
        console.print(check_line(result.check), highlight=False)
    stages = ", ".join(f"{k} {v:.0f} s" for k, v in (report.get("timings") or {}).items())
    console.print(f"cycle stages: {stages}")
    console.print(f"report: {result.report_html}")
