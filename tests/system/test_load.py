"""Under load, over real HTTP (uvicorn in a thread, one connection per client): concurrent feedback with
duplicate event ids stores exactly the unique events; searches during swaps never fail or mix versions.
bench/load.py runs the same generators with the full numbers (50 clients x 1,000 events)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.lab.loadtest import feedback_storm, mismatches, search_storm
from tests.helpers.factories import make_documents, world_documents
from tests.helpers.server import second_version, serve_in_thread

KEYS = {"Authorization": "Bearer srch"}
PER_SWAP = 2  # searches answered after each swap before the next one


@pytest.fixture
def settings(tmp_path: Path, tiny_model_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", base_model=str(tiny_model_path), admin_keys=["adm"], search_keys=["srch"]
    )


def test_concurrent_feedback_with_duplicates_stores_exactly_the_unique_events(settings: Settings) -> None:
    app = create_app(settings)
    with serve_in_thread(app) as url:
        admin = {"Authorization": "Bearer adm"}
        httpx.post(f"{url}/documents", json={"documents": make_documents()}, headers=admin).raise_for_status()
        load = feedback_storm(url, clients=10, events_per_client=100, duplicate_rate=0.1, batch_size=10, headers=KEYS)
        stats = httpx.get(f"{url}/stats", headers=KEYS).json()
        metrics = httpx.get(f"{url}/metrics", headers=KEYS).text
    assert not load.errors, load.errors[:3]
    assert load.status_counts == {200: load.requests}
    assert load.events_sent == 1000 and load.unique_events == 900
    assert stats["events"] == load.unique_events  # nothing lost, nothing doubled
    assert load.accepted == load.unique_events and load.duplicates == load.events_sent - load.unique_events
    assert 'flywheel_feedback_events_total{outcome="accepted"} 900.0' in metrics
    assert 'flywheel_feedback_events_total{outcome="duplicate"} 100.0' in metrics


@pytest.mark.parametrize("engine", ["edge", "local"])
def test_searches_during_swaps_never_fail_or_mix_versions(settings: Settings, tmp_path: Path, engine: str) -> None:
    app = create_app(settings.model_copy(update={"qdrant_engine": engine}))
    with serve_in_thread(app) as url:
        admin = {"Authorization": "Bearer adm"}
        httpx.post(f"{url}/documents", json={"documents": world_documents()}, headers=admin).raise_for_status()
        service = app.state.service
        query, k = "which guitar is good for a dog", 5
        v1, v2, expected = second_version(service, tmp_path / "other", query, k)
        assert expected["v1"] != expected["v2"]

        def searches() -> int:
            return service.store.stats()["searches"]

        def swap_back_and_forth() -> int:
            """20 swaps; after each, wait until the searchers got a few more answers (however slow the
            machine), so every version change happens with searches in flight."""
            for i in range(20):
                service.swap(v2 if i % 2 == 0 else v1)
                seen, deadline = searches(), time.monotonic() + 60
                while searches() < seen + PER_SWAP:
                    assert time.monotonic() < deadline, f"searches stopped after swap {i + 1}"
                    time.sleep(0.01)
            return i + 1

        load, swaps = search_storm(url, clients=6, query=query, k=k, during=swap_back_and_forth, headers=KEYS)
    assert swaps == 20
    assert not load.failures, load.failures[:3]
    # A floor that only proves searches kept running through the swaps; throughput is bench/load.py's business.
    assert len(load.answers) >= PER_SWAP * swaps
    assert mismatches(load, expected) == 0, "an answer's hits came from another version's collection"
    versions = {v for v, _ in load.answers}
    assert versions == {"v1", "v2"}
