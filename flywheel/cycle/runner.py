"""When cycles run: one at a time (a lock row in DuckDB), in a background thread of `flywheel serve`,
started by hand (`POST /cycles`, `flywheel retrain`) or by APScheduler when enough new pairs arrived.

The serving process is the only one that opens the DuckDB file, so a lock row owned by another process
instance is stale by construction (that process is gone); it is recovered at start-up, together with the
leftovers of the cycle it was running.
"""

from __future__ import annotations

import logging
import shutil
import threading
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from flywheel.config import Settings
from flywheel.cycle.adapter import run_adapter_cycle
from flywheel.cycle.full import run_cycle
from flywheel.cycle.online import summary as online_summary
from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.retention import run_retention
from flywheel.errors import Cancelled, Conflict, InvalidInput
from flywheel.logs import log_context
from flywheel.models.loading import resolve_device
from flywheel.models.registry import VERSION_RE, mark_discarded
from flywheel.serve.ledger import CycleLedger, count_new_signals
from flywheel.serve.service import Service
from flywheel.util.files import now_iso, utcnow

log = logging.getLogger(__name__)
RETRY_GC = timedelta(minutes=15)  # how long a scheduled retention run waits for a running cycle


def new_cycle_id() -> str:
    """A sortable, unique cycle id: c<UTC time>-<random>."""
    return f"c{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


class CycleRunner:
    """Starts cycles in a background thread, records their state, and guarantees one at a time."""

    def __init__(self, service: Service, on_finish: Callable[[CycleReport], None] | None = None) -> None:
        """Args: service: the open Service whose data dir the cycles work on; on_finish: called with each
        finished cycle's report, or with a bare "failed" report when the cycle crashed."""
        self.service = service
        self.on_finish = on_finish
        self.store = service.store
        self.owner = uuid.uuid4().hex  # this process instance
        self.ledger = CycleLedger(service.store, self.owner)
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._scheduler: Any = None

    # --- records (the ledger holds the SQL) -------------------------------------------------------------

    def get(self, cycle_id: str) -> dict[str, Any]:
        """A cycle's state.

        Raises:
            NotFound: unknown cycle id.
        """
        return self.ledger.get(cycle_id)

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent cycles, newest first."""
        return self.ledger.list(limit)

    def last_window_end(self, kind: str | None = None) -> datetime | None:
        """End of the event window of the last cycle (of `kind`, if given) that got past mining.

        Per kind, so that hourly adapter cycles do not starve a nightly full cycle of "new" pairs.
        """
        return self.ledger.last_window_end(kind)

    def update(self, cycle_id: str, **fields: Any) -> None:
        """Set some fields of a cycle's record and refresh the lock's heartbeat."""
        self.ledger.update(cycle_id, **fields)

    def running(self) -> str | None:
        """The id of the cycle running in this process, if any."""
        return self.ledger.running()

    def recover(self) -> list[str]:
        """After a restart: fail cycles left queued/running, drop their half-built collections and weights.

        Returns:
            The ids of the cycles marked failed.
        """
        stale = self.ledger.ids_in_state("queued", "running", "testing")
        for cycle_id in stale:
            self.update(cycle_id, state="failed", finished_at=utcnow(), error="interrupted: the server stopped")
        self.ledger.clear_lock()
        registry, index = self.service.registry, self.service.index
        known = {v.version for v in registry.versions()}
        serving = registry.incumbent().version
        for entry in registry.versions():
            # A candidate that never got its verdict (killed mid-evaluation or mid-swap) must not linger.
            if entry.status == "candidate" and entry.version != serving:
                log.warning("discarding the interrupted candidate %s", entry.version)
                index.drop(entry.version)
                mark_discarded(registry, entry.version, "failed", {"error": "interrupted: the server stopped"})
        for version in index.versions():
            if version not in known:
                log.warning("dropping leftover collection %s", index.collection(version))
                index.drop(version)
        for entry in registry.dir.iterdir():
            if entry.is_dir() and VERSION_RE.match(entry.name) and not (entry / "meta.json").exists():
                log.warning("discarding the half-trained model in %s", entry)
                mark_discarded(registry, entry.name, "failed", {"error": "interrupted: the server stopped"})
            elif entry.name.startswith(".") and entry.is_dir():  # a trainer's temp dir beside a version
                shutil.rmtree(entry, ignore_errors=True)
        if stale:
            log.warning("recovered interrupted cycle(s): %s", ", ".join(stale))
        return stale

    # --- running ----------------------------------------------------------------------------------------

    def start(
        self, trigger: str = "manual", on_stage: Callable[[str], None] | None = None, mode: str | None = None
    ) -> str:
        """Start a cycle in a background thread.

        Args:
            trigger: who asked ("api", "cli", "schedule", ...), recorded with the cycle.
            on_stage: called with each stage's name.
            mode: "adapter", "full" or "auto"; default settings.cycle_mode.

        Returns:
            The cycle id.

        Raises:
            Conflict: a cycle is already running.
            InvalidInput: unknown mode.
        """
        kind = resolve_mode(self.service.settings, mode)
        if not self._guard.acquire(timeout=5):  # held by a rollback (seconds), never by a running cycle
            raise Conflict("a rollback is in progress; start the cycle after it")
        try:
            if self._thread is not None and self._thread.is_alive():
                raise Conflict(f"cycle {self.running()} is running; wait for it")
            cycle_id = new_cycle_id()
            self.ledger.acquire(cycle_id, trigger, kind, self.service.serving_version)
            self._thread = threading.Thread(
                target=self._run, args=(cycle_id, on_stage, kind), name=f"cycle-{cycle_id}", daemon=True
            )
            self._thread.start()
            return cycle_id
        finally:
            self._guard.release()

    @contextmanager
    def maintenance(self, what: str) -> Iterator[None]:
        """Hold the lock a cycle start takes, for work that must not overlap a cycle or itself (rollback).

        Raises:
            Conflict: a cycle is running, or another maintenance (a second rollback) holds the lock.
        """
        if not self._guard.acquire(blocking=False):
            raise Conflict(f"another rollback or cycle start is in progress; {what} after it")
        try:
            if self._thread is not None and self._thread.is_alive():
                raise Conflict(f"cycle {self.running()} is running; {what} after it finished")
            yield
        finally:
            self._guard.release()

    def run(
        self, trigger: str = "manual", on_stage: Callable[[str], None] | None = None, mode: str | None = None
    ) -> dict[str, Any]:
        """Run one cycle to the end in the caller's thread (standalone `flywheel retrain`).

        Returns:
            The cycle's final record.
        """
        cycle_id = self.start(trigger, on_stage, mode)
        self.join()
        return self.get(cycle_id)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the running cycle's thread."""
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self, cycle_id: str, on_stage: Callable[[str], None] | None, kind: str = "full") -> None:
        with log_context(cycle_id=cycle_id):  # every log line of this cycle's thread carries its id
            self._run_logged(cycle_id, on_stage, kind)

    def _run_logged(self, cycle_id: str, on_stage: Callable[[str], None] | None, kind: str) -> None:
        def stage(name: str) -> None:
            if self._stop.is_set():  # between stages: the cycle settles as failed and writes its report
                raise Cancelled(f"cancelled before {name}: the server is shutting down")
            # While its candidate is tested on live searches, a cycle is "testing" (GET /cycles shows it).
            self.update(cycle_id, state="testing" if name == "online_test" else "running", stage=name)
            log.info("cycle %s: %s", cycle_id, name)
            if on_stage is not None:
                on_stage(name)

        notified = False
        try:
            self.update(cycle_id, state="running", stage="starting")
            report = run_any_cycle(self.service, cycle_id, on_stage=stage, mode=kind)
            # Observers first: whoever sees the final state in GET /cycles also sees it in /metrics.
            notified = self._notify(report)
            self.update(
                cycle_id,
                state=report.decision,
                stage="done",
                finished_at=utcnow(),
                candidate=report.candidate,
                window_end=datetime.fromisoformat(report.window_end) if report.window_end else None,
                error=report.error,
            )
        except Exception as exc:  # a cycle's failure must never take the server down
            log.exception("cycle %s failed", cycle_id)
            if not notified:
                self._notify(CycleReport(cycle_id=cycle_id, created_at=now_iso(), kind=kind, decision="failed"))
            self.update(cycle_id, state="failed", finished_at=utcnow(), error=f"{exc}\n{traceback.format_exc()}")
        finally:
            self.ledger.release(cycle_id)

    def _notify(self, report: CycleReport) -> bool:
        """Hand a finished cycle's report to `on_finish`; an observer's bug never fails the cycle."""
        if self.on_finish is not None:
            try:
                self.on_finish(report)
            except Exception:
                log.exception("on_finish observer failed")
        return True

    def stop_test(self, cycle_id: str, decision: str) -> dict[str, Any]:
        """End a cycle's online test now: "promote" or "reject" its candidate (the cycle settles at once).

        Returns:
            The cycle's record.

        Raises:
            NotFound: unknown cycle id.
            Conflict: the cycle is not in an online test.
            InvalidInput: unknown decision.
        """
        if decision not in ("promote", "reject"):
            raise InvalidInput(f"unknown decision {decision!r}: use 'promote' or 'reject'")
        state = self.get(cycle_id)["state"]
        experiment = self.service.experiment
        if experiment is None or experiment.id != cycle_id:
            raise Conflict(f"cycle {cycle_id} is {state}, not in an online test")
        experiment.request_stop(decision)
        return self.describe(cycle_id)

    def online_state(self, cycle_id: str) -> dict[str, Any] | None:
        """The live counts of a cycle's online test while it runs, else None."""
        experiment = self.service.experiment
        if experiment is None or experiment.id != cycle_id:
            return None
        return online_summary(self.store, experiment, self.service.settings)

    def describe(self, cycle_id: str) -> dict[str, Any]:
        """A cycle's record for the API: while it tests its candidate online, with the test's live state
        (`online`) and the candidate it tests.

        Raises:
            NotFound: unknown cycle id.
        """
        record = self.get(cycle_id)
        online = self.online_state(cycle_id)
        if online is not None:
            record["candidate"] = record["candidate"] or online["challenger"]
        return {**record, "online": online}

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Apply retention now, under the maintenance lock (see `flywheel.cycle.retention.run_retention`).

        Raises:
            Conflict: a cycle is running or starting, or a rollback is in progress.
        """
        with self.maintenance("run retention"):
            return run_retention(self.service, dry_run=dry_run)

    def scheduled_gc(self) -> None:
        """The retention job: a run that meets a cycle is deferred by RETRY_GC, not skipped until tomorrow."""
        try:
            self.gc()
        except Conflict as exc:
            log.info("retention deferred by %s: %s", RETRY_GC, exc)
            if self._scheduler is not None:
                self._scheduler.add_job(
                    self.scheduled_gc, "date", run_date=utcnow() + RETRY_GC, id="retention-retry", replace_existing=True
                )
        except Exception:  # a failed trim must never take the scheduler down; the next run tries again
            log.exception("retention failed")

    # --- the schedule -----------------------------------------------------------------------------------

    def maybe_start(self, mode: str | None = None) -> str | None:
        """The scheduled job: start a cycle of `mode` (default settings.cycle_mode) if none runs and at least
        `min_new_pairs` new pairs arrived since the last cycle of that kind."""
        if self._thread is not None and self._thread.is_alive():
            log.info("scheduled cycle skipped: one is running")
            return None
        kind = resolve_mode(self.service.settings, mode)
        fresh = count_new_signals(self.store, self.last_window_end(kind))
        if fresh < self.service.settings.min_new_pairs:
            log.info(
                "scheduled cycle skipped: %d new pairs < min_new_pairs %d", fresh, self.service.settings.min_new_pairs
            )
            return None
        try:
            return self.start("schedule", mode=kind)
        except Conflict:
            return None

    def start_schedule(self, settings: Settings) -> bool:
        """Start APScheduler with the cycle schedule (kind: cycle_mode), the adapter schedule and the retention
        schedule from settings; False if none is configured."""
        jobs = [(make_trigger(settings), None, "cycle"), (make_trigger(settings, adapter=True), "adapter", "adapter")]
        jobs = [job for job in jobs if job[0] is not None]
        if not jobs and not settings.retention_cron:
            return False
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger

        self._scheduler = BackgroundScheduler(timezone="UTC")
        for trigger, mode, job_id in jobs:
            self._scheduler.add_job(self.maybe_start, trigger, args=[mode], id=job_id, max_instances=1, coalesce=True)
            log.info("%s schedule: %s (min_new_pairs=%d)", job_id, trigger, settings.min_new_pairs)
        if settings.retention_cron:
            trigger = CronTrigger.from_crontab(settings.retention_cron, timezone="UTC")
            self._scheduler.add_job(self.scheduled_gc, trigger, id="retention", max_instances=1, coalesce=True)
        self._scheduler.start()
        return True

    def shutdown(self, wait: float = 0) -> bool:
        """Stop the schedule; with `wait`, ask a running cycle to stop at its next stage and wait for it.

        Returns:
            True when no cycle thread is left running.
        """
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
            self._scheduler = None
        if wait:
            self._stop.set()
            experiment = self.service.experiment
            if experiment is not None:  # an online test ends now, undecided: the incumbent stays
                experiment.request_stop("shutdown")
            self.join(wait)
        return self._thread is None or not self._thread.is_alive()


def make_trigger(settings: Settings, adapter: bool = False) -> Any:
    """The APScheduler trigger for `cycle_cron` or `cycle_interval_minutes` (cron wins), or None; with
    `adapter`, the same for `adapter_cycle_cron` / `adapter_cycle_interval_minutes`."""
    prefix = "adapter_cycle" if adapter else "cycle"
    cron, minutes = getattr(settings, f"{prefix}_cron"), getattr(settings, f"{prefix}_interval_minutes")
    if cron:
        from apscheduler.triggers.cron import CronTrigger

        return CronTrigger.from_crontab(cron, timezone="UTC")
    if minutes:
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(minutes=minutes, timezone="UTC")
    return None


def resolve_mode(settings: Settings, mode: str | None = None) -> str:
    """The kind of cycle to run: "adapter" or "full" ("auto": full when CUDA is present, else adapter)."""
    mode = mode or settings.cycle_mode
    if mode == "auto":
        return "full" if resolve_device(settings.device).startswith("cuda") else "adapter"
    if mode not in ("adapter", "full"):
        raise InvalidInput(f"unknown cycle mode {mode!r}: use 'adapter', 'full' or 'auto'")
    return mode


def run_any_cycle(
    service: Service, cycle_id: str, on_stage: Callable[[str], None] = lambda _: None, mode: str | None = None
) -> CycleReport:
    """Run one cycle of the kind `mode` (default: settings.cycle_mode) and return its report."""
    if resolve_mode(service.settings, mode) == "adapter":
        return run_adapter_cycle(service, cycle_id, on_stage)
    return run_cycle(service, cycle_id, on_stage)
