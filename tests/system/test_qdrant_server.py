"""The same index, service, swap and rollback paths against a Qdrant server (server mode, sharded collections).

Skipped unless FLYWHEEL_TEST_QDRANT_URL is set (no Qdrant binary can be installed on the CI machine):

    docker run -d -p 6333:6333 -e QDRANT__SERVICE__API_KEY=test-key qdrant/qdrant
    export FLYWHEEL_TEST_QDRANT_URL=http://localhost:6333 FLYWHEEL_TEST_QDRANT_API_KEY=test-key
    pytest tests/system/test_qdrant_server.py

Every test works under its own random alias and deletes its collections afterwards, so a shared server is fine.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.lab.loadtest import mismatches, search_storm
from flywheel.serve.index import Index, open_qdrant
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import CORPUS, world_documents
from tests.helpers.server import second_version, serve_in_thread

# Read at import: conftest's autouse fixture removes FLYWHEEL_* variables before each test runs.
URL = os.environ.get("FLYWHEEL_TEST_QDRANT_URL")
API_KEY = os.environ.get("FLYWHEEL_TEST_QDRANT_API_KEY")
pytestmark = pytest.mark.skipif(
    not URL,
    reason="needs a Qdrant server: `docker run -p 6333:6333 qdrant/qdrant`, then set "
    "FLYWHEEL_TEST_QDRANT_URL=http://localhost:6333 (and FLYWHEEL_TEST_QDRANT_API_KEY if the server has one)",
)


@pytest.fixture
def server_settings(tmp_path: Path, tiny_model_path: Path) -> Iterator[Settings]:
    """Settings in server mode under a fresh alias (2 shards, as a cluster would use); cleaned up after."""
    alias = f"t{uuid.uuid4().hex[:10]}"
    settings = Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        qdrant_url=URL,
        qdrant_api_key=API_KEY,
        qdrant_shards=2,
        qdrant_replication=1,
        collection_alias=alias,
    )
    yield settings
    client = open_qdrant(settings)
    try:
        for collection in client.get_collections().collections:
            if collection.name.startswith(f"{alias}__"):
                client.delete_collection(collection.name)
    finally:
        client.close()


def test_index_on_server_uses_shards_and_switches_the_alias(server_settings: Settings) -> None:
    client = open_qdrant(server_settings)
    index = Index(client, server_settings.collection_alias, shards=2, replication=1)
    try:
        vectors = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
        docs = [Document(f"d{i}", f"text {i}", {"i": i}) for i in range(10)]
        index.create("v1", 4)
        index.create("v2", 4)
        index.upsert("v1", docs, vectors, batch_size=3)
        index.upsert("v2", docs[:5], vectors[:5])
        assert client.get_collection(index.collection("v1")).config.params.shard_number == 2
        index.point_alias("v1")
        assert index.serving_version() == "v1" and index.count("v1") == 10
        assert index.search(vectors[7], 1)[0].doc_id == "d7"
        index.point_alias("v2")
        assert index.serving_version() == "v2"
        assert {h.doc_id for h in index.search(vectors[7], 10)} == {f"d{i}" for i in range(5)}
        index.drop("v1")
        assert index.versions() == ["v2"]
    finally:
        client.close()


def test_payload_indexes_are_on_the_server_collection_and_survive_a_swap(
    server_settings: Settings, tmp_path: Path
) -> None:
    declared = {"topic": "keyword", "n": "integer"}
    svc = Service.open(server_settings.model_copy(update={"payload_indexes": declared}))
    try:
        svc.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
        assert svc.index.payload_schema("v1") == {"metadata.topic": "keyword", "metadata.n": "integer"}
        _, v2, _ = second_version(svc, tmp_path / "other", "good guitar tips")
        svc.rebuild("v2", v2)
        svc.swap(v2)
        assert svc.index.serving_version() == "v2"
        assert svc.index.payload_schema("v2") == {"metadata.topic": "keyword", "metadata.n": "integer"}
        assert {h.metadata["topic"] for h in svc.search("guitar", 3, metadata_filter={"topic": "dog"}).hits} == {"dog"}
        svc.index.payload_indexes = {"topic": "keyword"}  # the setting without "n": flywheel drops its own index
        svc.index.ensure_payload_indexes("v2")
        assert svc.index.payload_schema("v2") == {"metadata.topic": "keyword"}
    finally:
        svc.close()


def test_service_restart_repairs_the_server_collection(server_settings: Settings) -> None:
    svc = Service.open(server_settings)
    svc.upsert_documents([Document(i, t) for i, t in CORPUS])
    svc.index.delete("v1", ["d1", "d2"])  # a crash between the DuckDB and the Qdrant write
    svc.close()
    again = Service.open(server_settings)
    try:
        assert again.index.count("v1") == len(CORPUS)
        assert again.search("learn python", 2).model_version == "v1"
    finally:
        again.close()


def test_searches_during_swaps_on_the_server(server_settings: Settings, tmp_path: Path) -> None:
    app = create_app(server_settings)
    with serve_in_thread(app) as url:
        httpx.post(f"{url}/documents", json={"documents": world_documents()}).raise_for_status()
        service = app.state.service
        query = "which guitar is good for a dog"
        v1, v2, expected = second_version(service, tmp_path / "other", query)

        def swaps() -> None:
            for i in range(10):
                service.swap(v2 if i % 2 == 0 else v1)
                time.sleep(0.1)

        load, _ = search_storm(url, clients=4, query=query, k=5, during=swaps)
    assert not load.failures and load.answers
    assert mismatches(load, expected) == 0


@pytest.mark.slow
def test_cycle_promotes_and_rolls_back_on_the_server(server_settings: Settings) -> None:
    from tests.helpers.cycles import simulate_users, wait_for

    settings = server_settings.model_copy(
        update={
            "train_learning_rate": 2e-3,
            "train_epochs": 4,
            "train_batch_size": 16,
            "min_heldout_pairs": 10,
            "heldout_percent": 25,
        }
    )
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": world_documents()}).raise_for_status()
        simulate_users(api)
        cycle_id = api.post("/cycles").json()["cycle_id"]
        record = wait_for(api, cycle_id)
        assert record["state"] == "promoted", api.get(f"/reports/{cycle_id}").json().get("reasons")
        service = api.app.state.service
        assert service.index.serving_version() == "v2" == api.get("/healthz").json()["model_version"]
        assert api.post("/models/rollback", json={}).json() == {"model_version": "v1", "previous": "v2"}
        assert service.index.serving_version() == "v1"
        assert api.post("/search", json={"query": "good guitar tips"}).json()["model_version"] == "v1"
