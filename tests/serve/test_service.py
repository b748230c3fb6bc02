"""The serving core: start-up reconciliation, both-or-neither writes, swaps (with adapters) that never mix versions."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.errors import NotFound
from flywheel.models.query_adapter import QueryAdapter
from flywheel.models.registry import ModelVersion
from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.service import Service
from flywheel.types import Document, Event
from flywheel.util.files import now_iso
from tests.helpers.factories import CORPUS, world_documents

DOCS = [Document(i, t) for i, t in CORPUS]


def test_first_start_registers_base_and_points_alias(service: Service) -> None:
    assert service.registry.incumbent().version == "v1"
    assert service.index.serving_version() == "v1"
    assert service.encoder.version == "v1"


def test_restart_repairs_missing_and_stale_points(settings: Settings) -> None:
    svc = Service.open(settings)
    svc.upsert_documents(DOCS)
    # Damage the collection the way a crash between the two writes would.
    svc.index.delete("v1", ["d1", "d2"])
    svc.index.upsert("v1", [Document("ghost", "not in duckdb")], svc.encoder.encode(["x"]))
    svc.close()
    again = Service.open(settings)
    try:
        assert again.index.count("v1") == len(DOCS)
        ids = {i for batch, _ in again.index.scroll_vectors("v1") for i in batch}
        assert ids == {d.id for d in DOCS}
    finally:
        again.close()


def test_restart_rebuilds_lost_collection(settings: Settings) -> None:
    svc = Service.open(settings)
    svc.upsert_documents(DOCS)
    before = [(h.doc_id, round(h.score, 5)) for h in svc.search("python", 3).hits]
    svc.index.drop("v1")
    svc.close()
    again = Service.open(settings)
    try:
        assert again.index.count("v1") == len(DOCS)
        assert again.index.serving_version() == "v1"
        assert [(h.doc_id, round(h.score, 5)) for h in again.search("python", 3).hits] == before
    finally:
        again.close()


@pytest.mark.parametrize(
    ("engine", "error", "message"),
    [("local", ValueError, "Collection documents__v1 not found"), ("edge", NotFound, "documents__v1 does not exist")],
)
def test_qdrant_failure_rolls_back_duckdb(settings: Settings, engine: str, error: type, message: str) -> None:
    service = Service.open(settings.model_copy(update={"qdrant_engine": engine}))
    try:
        service.index.drop("v1")  # the next Qdrant write fails
        with pytest.raises(error, match=message):
            service.upsert_documents(DOCS[:2])
        assert service.store.count_documents() == 0
    finally:
        service.close()


def test_swap_switches_alias_and_encoder_together(service: Service, tmp_path, tiny_model_path) -> None:
    from flywheel.models.encoder import Encoder
    from flywheel.models.loading import load_model
    from tests.helpers.tiny_model import build_tiny_model

    service.upsert_documents(DOCS)
    other = load_model(str(build_tiny_model(tmp_path / "other")), "cpu")
    for layer in other.parameters():  # a visibly different model of the same shape
        layer.data.mul_(-1.0)
    encoder = Encoder("v2", other)
    service.index.create("v2", encoder.dimension)
    service.embed_into("v2", encoder, DOCS)
    calls: list[str] = []
    service.swap(encoder, before_switch=lambda: calls.append(service.index.serving_version()))
    assert calls == ["v1"]
    result = service.search("learn python", 3)
    assert result.model_version == "v2" and service.index.serving_version() == "v2"
    expected = service.index.search(encoder.encode(["learn python"])[0], 3, collection="documents__v2")
    assert [h.doc_id for h in result.hits] == [h.doc_id for h in expected]
    logged = service.store.query("SELECT model_version FROM searches")
    assert logged == [("v2",)]
    assert isinstance(service.index, EdgeIndex) and np.isfinite(result.hits[0].score)  # a new data dir's default


def test_searches_during_adapter_swaps_never_mix_versions(settings: Settings) -> None:
    """HTTP searches run while the query transform flips between base and two adapters many times; every
    answer equals what its named version returns on its own."""
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": world_documents()})
        service = api.app.state.service
        dim = service.encoder.dimension
        adapters = {}
        for seed, version in ((1, "v2"), (2, "v3")):
            rotation, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(dim, dim)))
            adapter = QueryAdapter(version, "v1", rotation.astype(np.float32), np.zeros(dim, np.float32))
            _, folder = service.registry.allocate()
            adapter.save(folder)
            service.registry.save(ModelVersion(version, "adapter", "", now_iso(), dim, parent="v1"))
            adapters[version] = adapter
        query = "good guitar tips"
        base_vector = service.encoder.encode([query])[0]
        expected = {
            version: [h.doc_id for h in service.index.search(vector, 5)]
            for version, vector in (
                ("v1", base_vector),
                ("v2", adapters["v2"].apply(base_vector)),
                ("v3", adapters["v3"].apply(base_vector)),
            )
        }
        assert len({tuple(v) for v in expected.values()}) == 3, "the three versions must answer differently"
        answers: list[dict] = []
        errors: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                response = api.post("/search", json={"query": query, "k": 5})
                (answers.append(response.json()) if response.status_code == 200 else errors.append(response.text))

        threads = [threading.Thread(target=hammer) for _ in range(2)]
        for t in threads:
            t.start()
        for i in range(60):
            service.swap(service.encoder, adapter=[None, adapters["v2"], adapters["v3"]][i % 3])
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        for body in answers:
            assert [h["doc_id"] for h in body["hits"]] == expected[body["model_version"]]
        logged = service.store.query("SELECT DISTINCT vector_version FROM searches")
        assert logged == [("v1",)], "the base's vector is logged whatever adapter served"
        with pytest.raises(ValueError, match="belongs to"):
            service.swap(service.encoder, adapter=QueryAdapter("v9", "v7", np.eye(dim), np.zeros(dim)))


def test_a_rebuilt_collection_keeps_the_payload_indexes_through_swaps_and_restarts(tmp_path, tiny_model_path) -> None:
    from tests.helpers.server import second_version

    declared = {"topic": "keyword"}
    settings = Settings(data_dir=tmp_path / "data", base_model=str(tiny_model_path), payload_indexes=declared)
    service = Service.open(settings)
    try:
        service.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
        assert service.index.declared_indexes("v1") == declared
        _, v2, _ = second_version(service, tmp_path / "other", "good guitar tips")
        service.rebuild("v2", v2)  # how a full cycle makes its candidate's collection
        service.swap(v2)
        assert service.index.serving_version() == "v2" and service.index.declared_indexes("v2") == declared
        hits = service.search("good guitar tips", 3, metadata_filter={"topic": "dog"}).hits
        assert {h.metadata["topic"] for h in hits} == {"dog"}
    finally:
        service.close()
    more = {"topic": "keyword", "lang": "keyword"}
    service = Service.open(settings.model_copy(update={"payload_indexes": more}))
    try:
        # The registry still names v1: it serves again and gets the new index on start; v2 is kept, untouched.
        assert service.index.serving_version() == "v1" and service.index.declared_indexes("v1") == more
        assert service.index.declared_indexes("v2") == declared
        service.swap(v2)  # as a rollback onto a kept collection does
        assert service.index.serving_version() == "v2" and service.index.declared_indexes("v2") == more
    finally:
        service.close()


def test_an_exploring_search_shows_its_top_then_results_from_below_and_logs_them(settings: Settings) -> None:
    explore = settings.model_copy(update={"explore_share": 1.0, "explore_slots": 2, "explore_depth": 5})
    svc = Service.open(explore)
    try:
        svc.upsert_documents(DOCS)
        query = "learn python programming"
        plain = [h.doc_id for h in svc.index.search(svc.encoder.encode([query])[0], len(DOCS))]
        result = svc.search(query, 4)
        shown = [h.doc_id for h in result.hits]
        assert shown[:2] == plain[:2]
        assert set(shown[2:]) <= set(plain[2:9]) and len(set(shown)) == 4
        rows = svc.store.query("SELECT arm, experiment FROM searches WHERE search_id = ?", [result.search_id])
        assert rows == [("explore", None)]
        logged = svc.store.query("SELECT doc_id FROM impressions WHERE search_id = ? ORDER BY rank", [result.search_id])
        assert [d for (d,) in logged] == shown  # ranks as shown, so clicks on them are judged where they were seen
        deep = shown[3]
        assert svc.feedback([Event("e1", result.search_id, deep, "click")]) == (1, 0)
    finally:
        svc.close()


def test_with_repeats_a_question_explores_once_it_was_asked_before_even_after_a_restart(settings: Settings) -> None:
    explore = settings.model_copy(update={"explore_share": 1.0, "explore_repeats": 1})
    arm = "SELECT arm FROM searches WHERE search_id = ?"
    svc = Service.open(explore)
    try:
        svc.upsert_documents(DOCS)
        first, again = svc.search("learn python programming", 4), svc.search("Learn Python programming?", 4)
        other = svc.search("a question nobody asked", 4)
        assert [svc.store.query(arm, [r.search_id]) for r in (first, again, other)] == [
            [(None,)],
            [("explore",)],
            [(None,)],
        ]
    finally:
        svc.close()
    svc = Service.open(explore)  # the count starts again from the search log
    try:
        assert svc.store.query(arm, [svc.search("a question nobody asked", 4).search_id]) == [("explore",)]
    finally:
        svc.close()


def test_searches_do_not_explore_by_default(service: Service) -> None:
    service.upsert_documents(DOCS)
    result = service.search("learn python programming", 4)
    plain = [h.doc_id for h in service.index.search(service.encoder.encode(["learn python programming"])[0], 4)]
    assert [h.doc_id for h in result.hits] == plain
    assert service.store.query("SELECT arm FROM searches") == [(None,)]
