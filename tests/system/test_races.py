"""Races forced on purpose: rollbacks and cycle starts are serialised, and a hung trainer cannot hold a cycle."""

from __future__ import annotations

import threading
from pathlib import Path

from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.cycles import simulate_users, wait_for
from tests.helpers.factories import world_documents


def test_a_rollback_in_progress_refuses_a_second_rollback_and_a_cycle_start(api: TestClient) -> None:
    runner = api.app.state.runner
    entered, release = threading.Event(), threading.Event()

    def slow_rollback() -> None:  # the injected pause: a rollback that holds the maintenance lock
        with runner.maintenance("roll back"):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=slow_rollback)
    holder.start()
    try:
        assert entered.wait(5)
        second = api.post("/models/rollback", json={})
        assert second.status_code == 409 and "another rollback or cycle start" in second.json()["detail"]
        started = api.post("/cycles")
        assert started.status_code == 409 and "rollback is in progress" in started.json()["detail"]
    finally:
        release.set()
        holder.join()
    assert api.get("/cycles").json() == []  # nothing was started while the rollback held the lock


def test_a_rollback_or_a_retention_run_while_a_cycle_runs_is_refused(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", base_model=str(tiny_model_path), cycle_mode="full", retain_searches_days=0.001
    )
    with TestClient(create_app(settings)) as api:
        assert api.post("/documents", json={"documents": world_documents()}).status_code == 200
        simulate_users(api)
        before = api.get("/stats").json()
        cycle_id = api.post("/cycles").json()["cycle_id"]
        refused = api.post("/models/rollback", json={})
        gc_refused = api.post("/ops/gc", json={})
        running = api.get(f"/cycles/{cycle_id}").json()["state"] in ("queued", "running")
        during = api.get("/stats").json()
        wait_for(api, cycle_id)
    # Training starts a child process (seconds): the cycle is still running when the rollback arrives.
    assert running and refused.status_code == 409 and "is running" in refused.json()["detail"]
    assert gc_refused.status_code == 409 and "run retention after it finished" in gc_refused.json()["detail"]
    assert during == before  # the log the cycle reads did not shrink under it


def test_a_trainer_over_the_cycle_budget_is_killed_and_the_cycle_fails_with_the_reason(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    # 3 s of budget: starting the training process alone takes longer, so the child is killed, not awaited.
    settings = Settings(
        data_dir=tmp_path / "d", base_model=str(tiny_model_path), cycle_mode="full", max_cycle_minutes=0.05
    )
    with TestClient(create_app(settings)) as api:
        assert api.post("/documents", json={"documents": world_documents()}).status_code == 200
        simulate_users(api)
        record = wait_for(api, api.post("/cycles").json()["cycle_id"])
        assert record["state"] == "failed" and "timed out" in record["error"]
        again = api.post("/cycles")
        assert again.status_code == 202  # the lock was released
        wait_for(api, again.json()["cycle_id"])


def test_shutdown_stops_a_running_cycle_at_its_next_stage_before_closing_the_store(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), cycle_mode="full")
    with TestClient(create_app(settings)) as api:
        assert api.post("/documents", json={"documents": world_documents()}).status_code == 200
        simulate_users(api)
        cycle_id = api.post("/cycles").json()["cycle_id"]
        runner = api.app.state.runner
    # The app has shut down: the cycle was asked to stop and waited for, not cut off by a closed store.
    assert not runner._thread.is_alive()
    with TestClient(create_app(settings)) as api:
        record = api.get(f"/cycles/{cycle_id}").json()
        assert record["state"] == "failed" and "the server is shutting down" in record["error"], record
        report = api.get(f"/reports/{cycle_id}").json()  # it settled and wrote its report
        assert report["decision"] == "failed" and api.get("/healthz").json()["model_version"] == "v1"
