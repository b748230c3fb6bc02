"""Retention: old rows and files go, what a cycle still needs stays, whatever the settings ask for."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.cycle.retention import run_retention
from flywheel.models.registry import ModelVersion
from flywheel.serve.ledger import CycleLedger
from flywheel.serve.service import Service
from flywheel.types import Document, Event, Impression
from flywheel.util.files import now_iso, utcnow

NOW = utcnow()


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def log(store, search_id: str, age: float, query: str = "q", events: dict[str, float] | None = None) -> None:
    """A search `age` days old that showed a and b, with a click on a per event id -> days since it arrived."""
    vector = np.full(4, age, dtype=np.float32)  # tells the searches' vectors apart
    shown = [Impression(1, "a", 0.9), Impression(2, "b", 0.8)]
    store.log_search(search_id, query, 2, "v1", shown, query_vector=vector, vector_version="v1")
    store.query("UPDATE searches SET ts = ? WHERE search_id = ?", [days_ago(age), search_id])
    for event_id, received in (events or {}).items():
        store.add_events([Event(event_id, search_id, "a", "click")])
        store.query(
            "UPDATE events SET received_at = ?, ts = ? WHERE event_id = ?", [days_ago(received)] * 2 + [event_id]
        )


def finished_cycle(service: Service, cycle_id: str, window_end: datetime, window: dict | None) -> None:
    """A settled cycle record and its report.json (window None: a report from before next_traffic_start)."""
    ledger = CycleLedger(service.store, owner="test")
    ledger.acquire(cycle_id, "schedule", "adapter", "v1")
    ledger.update(cycle_id, state="rejected", window_end=window_end, finished_at=window_end)
    ledger.release(cycle_id)
    report = {"cycle_id": cycle_id, "created_at": window_end.isoformat() + "+00:00", "kind": "adapter"}
    if window is not None:
        report["window"] = window
    folder = service.settings.reports_dir / cycle_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "report.json").write_text(json.dumps(report))
    (service.settings.cycles_dir / cycle_id).mkdir(parents=True, exist_ok=True)
    (service.settings.cycles_dir / cycle_id / "pairs.parquet").write_bytes(b"PAR1")


def rows(service: Service, table: str, column: str) -> set[str]:
    return {r[0] for r in service.store.query(f"SELECT {column} FROM {table}")}


@pytest.fixture
def trimmed(tmp_path: Path, tiny_model_path: Path):
    settings = Settings(
        data_dir=tmp_path / "d",
        base_model=str(tiny_model_path),
        retain_searches_days=30,
        retain_events_days=60,
        retain_tombstones_days=30,
        retain_reports=2,
        retain_snapshots=1,
    )
    service = Service.open(settings)
    yield service
    service.close()


def test_retention_deletes_what_is_old_and_keeps_what_cycles_need(trimmed: Service) -> None:
    service, store = trimmed, trimmed.store
    service.upsert_documents([Document(i, f"text {i}") for i in ("a", "b", "gone-old", "gone-new")])
    log(store, "s-100", 100, events={"e-100": 100})  # old and consumed: goes, with its click
    log(store, "s-45", 45, events={"e-45": 45})  # 45 > 30 days and before the held-out window: goes
    log(store, "s-100-quiet", 100)  # no feedback at all: goes
    log(store, "s-35-held", 35, query="python", events={"e-35": 35})  # older than 30 days, but held out: stays
    log(store, "s-25", 25, query="python", events={"e-25": 25})  # younger than 30 days: stays
    # 80 days old, but one click arrived after the last cycle's window: the search and that click stay; its
    # consumed click from 80 days ago is older than retain_events_days and goes.
    log(store, "s-80-late", 80, events={"e-80": 80, "e-late": 1})
    for doc_id, age in (("gone-old", 40), ("gone-new", 10)):
        service.delete_document(doc_id)
        store.query("UPDATE document_deletions SET deleted_at = ? WHERE id = ?", [days_ago(age), doc_id])

    # Five settled cycles; the latest held out its next traffic from 40 days ago on.
    for n, age in enumerate((60, 50, 30, 20)):
        finished_cycle(service, f"c{n}", days_ago(age), {"start": None, "end": days_ago(age).isoformat(),
                                                         "next_traffic_start": None})  # fmt: skip
    finished_cycle(service, "c9", days_ago(5), {"end": days_ago(5).isoformat(), "next_traffic_start":
                                                days_ago(40).isoformat()})  # fmt: skip
    # v2, made by the oldest cycle, is a rollback target: that cycle's report and snapshot stay.
    service.registry.save(ModelVersion("v2", "finetune", "tiny", now_iso(), 4, made_by={"cycle_id": "c0"}))
    service.registry.promote("v2")
    service.registry.promote("v1", action="rollback")
    python_vector = store.query_vectors("v1", {"python"})["python"]

    before = store.stats()
    preview = run_retention(service, dry_run=True, now=NOW)
    assert store.stats() == before and len(list(service.settings.reports_dir.iterdir())) == 5  # nothing went
    result = run_retention(service, now=NOW)
    assert (
        result["deleted"]
        == preview["deleted"]
        == {
            "searches": 3,
            "impressions": 6,
            "events": 3,  # e-100, e-45 with their searches; e-80 by age
            "shadow_rankings": 0,
            "query_vectors": 1,  # s-35-held's: s-25 asked the same and is newer
            "tombstones": 1,
            "reports": 2,  # c1 and c2: c0 made a rollback target, c3 and c9 are the newest two
            "snapshots": 3,  # c1, c2, c3: c9 is the newest, c0 is protected
        }
    )
    assert rows(service, "searches", "search_id") == {"s-35-held", "s-25", "s-80-late"}
    assert rows(service, "events", "event_id") == {"e-35", "e-25", "e-late"}
    assert rows(service, "impressions", "search_id") == rows(service, "searches", "search_id")  # no orphans
    assert rows(service, "document_deletions", "id") == {"gone-new"}
    assert {p.name for p in service.settings.reports_dir.iterdir()} == {"c0", "c3", "c9"}
    assert {p.name for p in service.settings.cycles_dir.iterdir()} == {"c0", "c9"}
    assert np.array_equal(store.query_vectors("v1", {"python"})["python"], python_vector)  # what cycles read
    assert result["kept"]["held_out_from"] == days_ago(40).isoformat() + "Z"
    assert result["kept"]["consumed_until"] == days_ago(5).isoformat() + "Z"
    assert set(result["kept"]["cycles"]) == {"c0", "c9"}
    again = run_retention(service, now=NOW)["deleted"]
    assert set(again.values()) == {0}, again  # a second run finds nothing left to trim


def test_nothing_of_the_log_goes_before_a_cycle_consumed_it(trimmed: Service) -> None:
    log(trimmed.store, "s-100", 100, events={"e-100": 100})
    log(trimmed.store, "s-90", 90)
    deleted = run_retention(trimmed, now=NOW)["deleted"]
    assert (deleted["searches"], deleted["events"]) == (0, 0)
    assert rows(trimmed, "searches", "search_id") == {"s-100", "s-90"}


def test_a_latest_report_without_its_held_out_window_keeps_every_search(trimmed: Service) -> None:
    """A report written before reports recorded the held-out window: the searches of that window are unknown."""
    log(trimmed.store, "s-100", 100, events={"e-100": 100})
    finished_cycle(trimmed, "c-old-format", days_ago(5), {"start": None, "end": days_ago(5).isoformat()})
    result = run_retention(trimmed, now=NOW)
    assert (result["deleted"]["searches"], result["deleted"]["events"]) == (0, 0)
    assert result["kept"]["held_out_from"] is None
    assert rows(trimmed, "events", "event_id") == {"e-100"}


def test_defaults_keep_the_log_and_reports_forever(tmp_path: Path, tiny_model_path: Path) -> None:
    service = Service.open(Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path)))
    try:
        log(service.store, "s-1000", 1000, events={"e-1000": 1000})
        for n in range(3):
            finished_cycle(service, f"c{n}", days_ago(10 - n), {"end": None, "next_traffic_start": None})
        deleted = run_retention(service)["deleted"]
        assert deleted["searches"] == deleted["events"] == deleted["reports"] == 0
        assert rows(service, "searches", "search_id") == {"s-1000"}
    finally:
        service.close()


def test_tombstones_a_rollback_would_replay_are_kept(trimmed: Service) -> None:
    """A retired collection catches up on the deletes made since it stopped serving: those records stay."""
    service = trimmed
    service.upsert_documents([Document("x", "a page"), Document("y", "another page")])
    service.delete_document("x")
    service.store.query("UPDATE document_deletions SET deleted_at = ?", [days_ago(40)])
    service.index.create("v2", service.encoder.dimension)
    service.registry.save(ModelVersion("v2", "finetune", "tiny", now_iso(), 4))
    service.registry.promote("v2")
    service.registry.promote("v1", action="rollback")  # v2 retired: a rollback to it replays from then

    def retired(days: float) -> None:
        state = json.loads((service.registry.dir / "registry.json").read_text())
        state["history"][-1]["at"] = days_ago(days).isoformat() + "+00:00"
        (service.registry.dir / "registry.json").write_text(json.dumps(state))

    retired(45)
    result = run_retention(service, now=NOW)
    assert result["deleted"]["tombstones"] == 0 and rows(service, "document_deletions", "id") == {"x"}
    assert result["kept"]["tombstones_from"] == (days_ago(45) - timedelta(seconds=1)).isoformat() + "Z"
    retired(35)  # the delete reached v2 while it served: no replay needs its record
    assert run_retention(service, now=NOW)["deleted"]["tombstones"] == 1
