"""End to end over HTTP: a real adapter cycle passes the offline gate, its candidate is interleaved with the
incumbent on live searches, simulated users' clicks decide, the swap happens, and the report shows it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.lab.simulate import UserModel, simulate
from tests.helpers.cycles import simulate_users
from tests.helpers.factories import world_documents, world_queries

# Users who look down the list with falling attention and click what answers them.
USERS = UserModel(click_prob=0.9, decay=0.7, wrong_click=0.02, no_click=0.05)


@pytest.fixture
def online_settings(tmp_path: Path, tiny_model_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        device="cpu",  # cycle_mode "auto" -> adapter
        min_heldout_pairs=10,
        heldout_percent=25,
        adapter_epochs=100,
        adapter_learning_rate=1e-2,
        online_test="interleave",
        interleave_fraction=0.5,
        interleave_check_seconds=0.2,
        interleave_max_searches=3000,
    )


def wait_for_state(api: TestClient, cycle_id: str, leave: set[str], timeout: float = 600) -> dict:
    """Poll GET /cycles/{id} until its state is not in `leave`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = api.get(f"/cycles/{cycle_id}").json()
        if record["state"] not in leave:
            return record
        time.sleep(0.2)
    raise TimeoutError(cycle_id)


@pytest.mark.slow
def test_a_candidate_is_proven_on_live_searches_and_promoted_by_users_clicks(online_settings: Settings) -> None:
    with TestClient(create_app(online_settings)) as api:
        api.post("/documents", json={"documents": world_documents()})
        assert simulate_users(api) > 100
        cycle_id = api.post("/cycles").json()["cycle_id"]
        record = wait_for_state(api, cycle_id, {"queued", "running"})
        assert record["state"] == "testing", api.get(f"/reports/{cycle_id}").text
        assert record["stage"] == "online_test" and record["online"]["challenger"] == "v2"
        assert api.get("/healthz").json()["model_version"] == "v1"  # nothing promoted yet

        # While it runs: every answer is the incumbent's or the interleaved list of the two under test.
        arms = set()
        for _ in range(20):
            body = api.post("/search", json={"query": "good guitar tips", "k": 5}).json()
            assert body["model_version"] == "v1" and body["experiment"]["id"] == cycle_id
            arms.add(body["experiment"]["arm"])
            assert [h["rank"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
            if body["experiment"]["arm"] == "interleaved":
                assert body["experiment"]["challenger"] == "v2"
        assert arms == {"interleaved", "incumbent"}
        metrics = api.get("/metrics").text
        assert f'flywheel_online_test_searches{{cycle_id="{cycle_id}",mode="interleave"}}' in metrics

        queries, relevant = world_queries()
        for seed in range(40):
            simulate(api, queries, relevant, USERS, seed=100 + seed)  # raises on any non-2xx answer
            record = api.get(f"/cycles/{cycle_id}").json()
            if record["state"] != "testing":
                break
        # After the test, the swap stage runs ("running") before the final report is written.
        record = wait_for_state(api, cycle_id, {"testing", "running"}, timeout=60)
        report = api.get(f"/reports/{cycle_id}").json()
        online = report["online"]
        assert record["state"] == "promoted", online
        assert online["verdict"] == "challenger" and online["wins"] > online["losses"]
        assert online["band"][0] > 0.5 and online["searches"] > 0 and online["control_searches"] > 0
        assert {"name": "online_test", "passed": True, "detail": online["reason"]} in report["checks"]
        assert "online_test" in report["timings"]
        after = api.post("/search", json={"query": "good guitar tips"}).json()
        assert after["model_version"] == "v2" and "experiment" not in after  # the plain answer again
        html = api.get(f"/reports/{cycle_id}/html")
        assert html.status_code == 200 and "Online test" in html.text


def test_stop_answers_409_when_no_test_runs_and_404_for_unknown_cycles(api: TestClient) -> None:
    assert api.post("/cycles/nope/stop", json={"decision": "promote"}).status_code == 404
    response = api.post("/cycles/nope/stop", json={"decision": "maybe"})
    assert response.status_code == 422


@pytest.mark.slow
def test_a_fine_tuned_candidate_under_test_sees_every_write_and_an_operator_can_reject_it(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        train_learning_rate=2e-3,
        train_epochs=4,
        train_batch_size=16,
        min_heldout_pairs=10,
        heldout_percent=25,
        cycle_mode="full",
        gate_metric="pair_error",  # the tiny model's fine-tune is judged by the seed's measure (tests/cycle/test_full)
        online_test="interleave",
        interleave_fraction=1.0,
        interleave_check_seconds=0.2,
    )
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": world_documents()})
        assert simulate_users(api) > 100
        cycle_id = api.post("/cycles").json()["cycle_id"]
        record = wait_for_state(api, cycle_id, {"queued", "running"})
        assert record["state"] == "testing", api.get(f"/reports/{cycle_id}").text
        service = api.app.state.service
        candidate = record["candidate"]
        assert service.index.exists(candidate) and service.experiment.encoder.version == candidate

        # Writes during the test reach both collections, so either ranker can show any live document.
        doc = {"id": "late", "text": "a late page about guitar strings", "metadata": {}}
        assert api.post("/documents", json={"documents": [doc]}).status_code == 200
        assert api.delete(f"/documents/{world_documents()[0]['id']}").status_code == 204
        for version in ("v1", candidate):
            ids = {i for batch, _ in service.index.scroll_vectors(version) for i in batch}
            assert "late" in ids and world_documents()[0]["id"] not in ids
        body = api.post("/search", json={"query": "guitar strings", "k": 5}).json()
        assert body["experiment"]["arm"] == "interleaved" and body["experiment"]["challenger"] == candidate
        assert api.post("/models/rollback", json={}).status_code == 409  # the test is part of its cycle

        stopped = api.post(f"/cycles/{cycle_id}/stop", json={"decision": "reject"})
        assert stopped.status_code == 202 and stopped.json()["state"] == "testing"
        record = wait_for_state(api, cycle_id, {"testing", "running"}, timeout=60)
        report = api.get(f"/reports/{cycle_id}").json()
        assert record["state"] == "rejected" and report["online"]["reason"].endswith("reject")
        assert not service.index.exists(candidate) and service.experiment is None
        assert api.post(f"/cycles/{cycle_id}/stop", json={"decision": "promote"}).status_code == 409
        after = api.post("/search", json={"query": "guitar strings"}).json()
        assert after["model_version"] == "v1" and "experiment" not in after
