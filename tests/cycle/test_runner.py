"""Cycle bookkeeping: ids, one at a time, recovery after a crash, the min_new_pairs rule, modes and schedules."""

from __future__ import annotations

import logging
import re
import time
from datetime import datetime

import pytest

from flywheel.config import Settings
from flywheel.cycle.runner import CycleRunner, make_trigger, new_cycle_id, resolve_mode
from flywheel.errors import Conflict, NotFound
from flywheel.serve.service import Service
from flywheel.types import Event, Impression
from flywheel.util.files import utcnow


def test_cycle_ids_carry_the_utc_second_and_are_unique_within_it() -> None:
    """c<UTC YYYYmmddTHHMMSS>-<6 hex>: fixed width, so string order is time order; the suffix keeps the ids of
    one second apart."""
    before = utcnow().replace(microsecond=0)
    ids = [new_cycle_id() for _ in range(10)]  # 24 random bits: a repeat among 10 is a 1-in-370,000 event
    after = utcnow()
    assert all(re.fullmatch(r"c\d{8}T\d{6}-[0-9a-f]{6}", i) for i in ids), ids[:3]
    stamps = {datetime.strptime(i[1:16], "%Y%m%dT%H%M%S") for i in ids}
    assert all(before <= t <= after for t in stamps)  # the UTC second it was made in, not local time
    assert len(set(ids)) == len(ids)


def test_lock_refuses_a_second_cycle(service: Service) -> None:
    runner = CycleRunner(service)
    runner.ledger.acquire("c-held", "manual", "full", None)
    with pytest.raises(Conflict, match="c-held"):
        runner.start()
    assert runner.running() == "c-held"
    assert runner.get("c-held")["state"] == "queued"
    with pytest.raises(NotFound):
        runner.get("nope")


def test_recover_after_crash(service: Service) -> None:
    crashed = CycleRunner(service)
    crashed.ledger.acquire("c-crashed", "manual", "full", None)
    crashed.update("c-crashed", state="running", stage="reembed")
    service.index.create("v7", service.encoder.dimension)  # half-built candidate collection
    (service.registry.dir / "v8").mkdir()  # half-written candidate weights (no meta.json)

    restarted = CycleRunner(service)  # a new process instance
    assert restarted.recover() == ["c-crashed"]
    record = restarted.get("c-crashed")
    assert record["state"] == "failed" and "interrupted" in record["error"]
    assert restarted.running() is None
    assert service.index.versions() == ["v1"]
    stub = service.registry.get("v8")  # the number stays taken; nothing servable is left behind
    assert stub.status == "failed" and [p.name for p in stub.path.iterdir()] == ["meta.json"]
    assert service.registry.allocate()[0] == "v9"
    restarted.ledger.acquire("c-next", "manual", "full", None)  # the lock is free again
    assert restarted.running() == "c-next"


def test_a_cycle_cut_short_during_its_online_test_is_failed_at_restart(service: Service) -> None:
    crashed = CycleRunner(service)
    crashed.ledger.acquire("c-testing", "schedule", "adapter", "v1")
    crashed.update("c-testing", state="testing", stage="online_test")
    restarted = CycleRunner(service)
    assert restarted.recover() == ["c-testing"]
    record = restarted.get("c-testing")
    assert record["state"] == "failed" and "interrupted" in record["error"] and restarted.running() is None
    assert restarted.online_state("c-testing") is None  # nothing is tested any more
    with pytest.raises(Conflict, match="not in an online test"):
        restarted.stop_test("c-testing", "promote")


def test_maybe_start_waits_for_min_new_pairs(tmp_path, tiny_model_path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), min_new_pairs=2)
    service = Service.open(settings)
    try:
        runner = CycleRunner(service)
        service.store.log_search("s1", "q", 2, "v1", [Impression(1, "a", 0.9), Impression(2, "b", 0.8)])
        service.store.add_events([Event("e1", "s1", "a", "click")])
        assert runner.maybe_start() is None  # 1 new pair < 2
        assert runner.list() == []
    finally:
        service.close()


def test_triggers_from_settings() -> None:
    assert make_trigger(Settings()) is None
    assert "interval" in str(make_trigger(Settings(cycle_interval_minutes=60))).lower()
    cron = make_trigger(Settings(cycle_cron="0 3 * * *", cycle_interval_minutes=60))
    assert "cron" in str(cron).lower() and "hour='3'" in str(cron)


def test_schedule_runs_the_job(service: Service, caplog: pytest.LogCaptureFixture) -> None:
    settings = service.settings.model_copy(update={"cycle_interval_minutes": 0.01, "min_new_pairs": 10**6})
    runner = CycleRunner(service)
    caplog.set_level(logging.INFO, logger="flywheel.cycle.runner")
    assert runner.start_schedule(settings)
    try:
        deadline = time.monotonic() + 10
        while "scheduled cycle skipped" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        runner.shutdown()
    assert "scheduled cycle skipped" in caplog.text
    assert runner.list() == []
    assert utcnow()  # the store is still usable after the scheduler stopped


def test_resolve_mode_defaults_to_adapter_on_cpu() -> None:
    assert resolve_mode(Settings(device="cpu")) == "adapter"
    assert resolve_mode(Settings(device="cuda")) == "full"
    assert resolve_mode(Settings(device="cpu", cycle_mode="full")) == "full"
    assert resolve_mode(Settings(device="cpu"), "full") == "full"


def test_schedules_run_each_kind_and_count_new_pairs_per_kind(service) -> None:
    settings = service.settings.model_copy(update={"cycle_cron": "0 3 * * *", "adapter_cycle_interval_minutes": 60})
    runner = CycleRunner(service)
    assert runner.start_schedule(settings)
    try:
        jobs = {job.id: job for job in runner._scheduler.get_jobs()}
        assert set(jobs) == {"cycle", "adapter", "retention"} and tuple(jobs["adapter"].args) == ("adapter",)
        assert "hour='3'" in str(jobs["retention"].trigger) and "minute='30'" in str(jobs["retention"].trigger)
    finally:
        runner.shutdown()
    with service.store.transaction() as con:
        con.execute(
            "INSERT INTO cycles (cycle_id, trigger, state, started_at, window_end, kind) "
            "VALUES ('c1', 'schedule', 'promoted', now(), TIMESTAMP '2030-01-01', 'adapter')"
        ).fetchall()
    assert runner.last_window_end("adapter").year == 2030
    assert runner.last_window_end("full") is None  # an hourly adapter cycle does not starve the nightly full one


def test_a_scheduled_retention_run_that_meets_a_cycle_is_deferred_not_skipped(service: Service) -> None:
    runner = CycleRunner(service)
    assert not runner.start_schedule(service.settings.model_copy(update={"retention_cron": ""}))
    assert runner.start_schedule(service.settings)  # retention alone is a schedule (daily by default)
    try:
        with runner.maintenance("roll back"):  # what a cycle start or a rollback holds
            with pytest.raises(Conflict, match="run retention after it"):
                runner.gc()
            runner.scheduled_gc()
        retry = runner._scheduler.get_job("retention-retry")
        assert retry is not None and (retry.next_run_time.replace(tzinfo=None) - utcnow()).total_seconds() > 600
    finally:
        runner.shutdown()
    assert runner.gc(dry_run=True)["dry_run"] is True  # the lock is free again
