"""Retention: trim the event log, document tombstones, reports and pair snapshots by the `retain_*` settings.

A run never deletes what the loop still needs, whatever the settings say:

- feedback received after the newest cycle's window (no cycle has learned from it yet), and its search;
- the searches of the latest cycles' held-out next traffic (from its first search on), and their feedback;
- tombstones a rollback's catch-up would replay, and the reports and snapshots of the cycles that made the
  serving model and its rollback targets, or of the latest cycle of each kind.

The caller holds the maintenance lock (`CycleRunner.gc`), so no cycle reads the log while it shrinks.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from flywheel.cycle.report.files import CYCLE_ID_RE, list_reports, load_report
from flywheel.errors import NotFound
from flywheel.serve.ledger import CycleLedger, latest_mined_cycles, trim_log
from flywheel.serve.service import Service
from flywheel.serve.versions import catch_up_floor, kept_versions
from flywheel.util.files import to_utc_naive, utcnow

log = logging.getLogger(__name__)

COUNTED = (
    "searches",
    "impressions",
    "events",
    "shadow_rankings",
    "query_vectors",
    "tombstones",
    "reports",
    "snapshots",
)


def run_retention(service: Service, dry_run: bool = False, now: datetime | None = None) -> dict[str, Any]:
    """Apply the retention settings once (or with `dry_run` only say what would go).

    Args:
        service: the open Service; the caller makes sure no cycle runs.
        dry_run: count, delete nothing.
        now: the time ages are measured from (default: now, naive UTC).

    Returns:
        {"dry_run", "deleted": {what: count} (see COUNTED), "kept": the limits that protected rows and files}.
    """
    settings = service.settings
    now = now or utcnow()
    latest = latest_mined_cycles(service.store)
    consumed = max((end for _, _, end in latest), default=None)
    held_out = held_out_from(settings.reports_dir, latest)
    tombstones_before = _ago(now, settings.retain_tombstones_days)
    replay_from = catch_up_floor(service)
    if tombstones_before is not None and replay_from is not None:
        tombstones_before = min(tombstones_before, replay_from)
    deleted = trim_log(
        service.store,
        searches_before=_ago(now, settings.retain_searches_days),
        events_before=_ago(now, settings.retain_events_days),
        keep_searches_from=held_out or datetime(1, 1, 1),  # unknown held-out window: every search stays
        consumed_until=consumed,
        tombstones_before=tombstones_before,
        dry_run=dry_run,
    )
    keep = protected_cycles(service) | {cycle_id for cycle_id, _, _ in latest}
    reports = [r["cycle_id"] for r in list_reports(settings.reports_dir)]  # newest first
    deleted["reports"] = _trim_folders(settings.reports_dir, reports, settings.retain_reports, keep, dry_run)
    snapshots = sorted((p.name for p in _cycle_folders(settings.cycles_dir)), reverse=True)  # ids sort by time
    deleted["snapshots"] = _trim_folders(settings.cycles_dir, snapshots, settings.retain_snapshots, keep, dry_run)
    kept = {
        "consumed_until": _iso(consumed),
        "held_out_from": _iso(held_out),
        "tombstones_from": _iso(replay_from),
        "cycles": sorted(keep),
    }
    log.info("retention%s: %s", " (dry run)" if dry_run else "", ", ".join(f"{k} {v}" for k, v in deleted.items()))
    return {"dry_run": dry_run, "deleted": {k: deleted[k] for k in COUNTED}, "kept": kept}


def held_out_from(reports_dir: Path, latest: list[tuple[str, str, datetime]]) -> datetime | None:
    """The first search of the held-out next traffic of the latest cycle of each kind (the earliest of them).

    A cycle that held nothing out by time protects from its window's end. None when a latest cycle's report
    does not say (written before reports recorded it, or missing): then every search is kept.
    """
    starts = []
    for cycle_id, _kind, window_end in latest:
        try:
            window = load_report(reports_dir, cycle_id).get("window") or {}
        except NotFound:
            return None
        if not isinstance(window, dict) or "next_traffic_start" not in window:
            return None
        value = window["next_traffic_start"]
        try:
            starts.append(to_utc_naive(datetime.fromisoformat(value)) if value else window_end)
        except (TypeError, ValueError):  # a hand-edited report: be safe
            return None
    return min(starts, default=None)


def protected_cycles(service: Service) -> set[str]:
    """Cycles whose report and snapshot stay: those that made the serving model (and its base) or a rollback
    target, and any cycle not settled yet."""
    registry = service.registry
    versions = {service.serving_version, service.encoder.version, *kept_versions(service)}
    cycles = {registry.get(v).made_by.get("cycle_id") for v in versions}
    unsettled = CycleLedger(service.store, owner="retention").ids_in_state("queued", "running", "testing")
    return {c for c in cycles if isinstance(c, str)} | set(unsettled)


def _trim_folders(parent: Path, newest_first: list[str], keep_newest: int, keep: set[str], dry_run: bool) -> int:
    """Delete the cycle folders of `parent` beyond the newest `keep_newest` (0: keep all), except `keep`."""
    if keep_newest <= 0:
        return 0
    doomed = [name for name in newest_first[keep_newest:] if name not in keep and CYCLE_ID_RE.fullmatch(name)]
    if not dry_run:
        for name in doomed:
            shutil.rmtree(parent / name, ignore_errors=True)
    return len(doomed)


def _cycle_folders(cycles_dir: Path) -> list[Path]:
    """Per-cycle folders under `cycles_dir` (a missing folder means none)."""
    if not cycles_dir.is_dir():
        return []
    return [p for p in cycles_dir.iterdir() if p.is_dir() and CYCLE_ID_RE.fullmatch(p.name)]


def _ago(now: datetime, days: float) -> datetime | None:
    """`days` before `now`, or None for 0 (keep forever)."""
    return now - timedelta(days=days) if days else None


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() + "Z" if when is not None else None


__all__ = ["COUNTED", "held_out_from", "protected_cycles", "run_retention"]
