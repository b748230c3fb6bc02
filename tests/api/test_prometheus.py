"""GET /metrics: Prometheus text with request, feedback, cycle and serving metrics, one registry per app."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.factories import make_documents, make_event


def scrape(api: TestClient, **kwargs: object) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics as {(name, sorted labels): value}."""
    response = api.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_requests_are_counted_per_route_template(loaded_api: TestClient) -> None:
    for _ in range(3):
        assert loaded_api.post("/search", json={"query": "learn python", "k": 2}).status_code == 200
    assert loaded_api.post("/search", json={"query": ""}).status_code == 422
    assert loaded_api.delete("/documents/d1").status_code == 204
    assert loaded_api.delete("/documents/no-such-doc").status_code == 404
    assert loaded_api.get("/no/such/path").status_code == 404
    samples = scrape(loaded_api)
    assert value(samples, "flywheel_http_requests_total", method="POST", route="/search", status="200") == 3
    assert value(samples, "flywheel_http_requests_total", method="POST", route="/search", status="422") == 1
    # Ids never become labels: both deletes share the template.
    assert (
        value(samples, "flywheel_http_requests_total", method="DELETE", route="/documents/{doc_id}", status="204") == 1
    )
    assert (
        value(samples, "flywheel_http_requests_total", method="DELETE", route="/documents/{doc_id}", status="404") == 1
    )
    assert value(samples, "flywheel_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert not any("no-such-doc" in str(key) for key in samples)
    count = value(samples, "flywheel_http_request_duration_seconds_count", method="POST", route="/search")
    total = value(samples, "flywheel_http_request_duration_seconds_sum", method="POST", route="/search")
    assert count == 4 and total > 0


def test_feedback_outcomes(loaded_api: TestClient) -> None:
    body = loaded_api.post("/search", json={"query": "learn python", "k": 3}).json()
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    first, second = make_event(sid, shown[0]), make_event(sid, shown[1], "skip")
    assert loaded_api.post("/feedback", json={"events": [first, second, first]}).json() == {
        "accepted": 2,
        "duplicates": 1,
    }
    bad = [make_event(sid, shown[2]), make_event("no-such-search", shown[0])]
    assert loaded_api.post("/feedback", json={"events": bad}).status_code == 422
    samples = scrape(loaded_api)
    assert value(samples, "flywheel_feedback_events_total", outcome="accepted") == 2
    assert value(samples, "flywheel_feedback_events_total", outcome="duplicate") == 1
    assert value(samples, "flywheel_feedback_events_total", outcome="rejected") == 2
    assert loaded_api.get("/stats").json()["events"] == 2


def test_serving_version_and_alias_consistency(loaded_api: TestClient) -> None:
    samples = scrape(loaded_api)
    assert value(samples, "flywheel_model_version_info", version="v1") == 1
    assert value(samples, "flywheel_alias_consistent") == 1
    assert value(samples, "flywheel_documents") == len(make_documents())
    # Someone else (another deployment on a shared Qdrant, an operator) moves the alias away.
    service = loaded_api.app.state.service
    service.index.create("v99", service.encoder.dimension)
    service.index.point_alias("v99")
    assert value(scrape(loaded_api), "flywheel_alias_consistent") == 0


def test_cycle_outcome_and_stage_durations(api: TestClient) -> None:
    """A cycle with no feedback is rejected after mining; its outcome and stage timing are exported."""
    cycle_id = api.post("/cycles").json()["cycle_id"]
    deadline = time.monotonic() + 60
    while api.get(f"/cycles/{cycle_id}").json()["state"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    samples = scrape(api)
    assert value(samples, "flywheel_cycles_total", outcome="rejected") == 1
    assert value(samples, "flywheel_cycles_total", outcome="promoted") == 0
    assert value(samples, "flywheel_cycle_stage_duration_seconds_count", stage="mine") == 1
    assert value(samples, "flywheel_cycle_duration_seconds_count") == 1


def test_each_app_has_its_own_registry(tmp_path: Path, tiny_model_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "a", base_model=str(tiny_model_path))
    two = Settings(data_dir=tmp_path / "b", base_model=str(tiny_model_path))
    with TestClient(create_app(one)) as a, TestClient(create_app(two)) as b:
        a.get("/livez")
        a.get("/livez")
        b.get("/livez")
        assert value(scrape(a), "flywheel_http_requests_total", method="GET", route="/livez", status="200") == 2
        assert value(scrape(b), "flywheel_http_requests_total", method="GET", route="/livez", status="200") == 1


@pytest.mark.parametrize("public", [False, True])
def test_metrics_auth(tmp_path: Path, tiny_model_path: Path, public: bool) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        base_model=str(tiny_model_path),
        admin_keys=["adm"],
        search_keys=["srch"],
        metrics_public=public,
    )
    with TestClient(create_app(settings)) as api:
        assert api.get("/metrics").status_code == (200 if public else 401)
        assert api.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == (200 if public else 401)
        for key in ("srch", "adm"):
            assert scrape(api, headers={"Authorization": f"Bearer {key}"})


def test_search_stages_are_timed(loaded_api: TestClient) -> None:
    """Each answered search adds one sample to every stage; its own time holds the encoder's and the engine's."""
    for _ in range(3):
        assert loaded_api.post("/search", json={"query": "learn python", "k": 2}).status_code == 200
    assert loaded_api.post("/search", json={"query": ""}).status_code == 422  # refused: no stage ran
    samples = scrape(loaded_api)
    name = "flywheel_search_stage_duration_seconds"
    counts = {stage: value(samples, f"{name}_count", stage=stage) for stage in ("encode", "engine", "search")}
    assert counts == {"encode": 3, "engine": 3, "search": 3}
    sums = {stage: value(samples, f"{name}_sum", stage=stage) for stage in counts}
    assert sums["encode"] > 0 and sums["engine"] > 0
    assert sums["search"] >= sums["encode"] + sums["engine"]
