"""The serving core: start-up reconciliation, both-or-neither writes, swaps that never mix versions."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.serve.index import Index
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import CORPUS

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
    svc.index.drop("v1")
    svc.close()
    again = Service.open(settings)
    try:
        assert again.index.count("v1") == len(DOCS)
        assert again.search("python", 2).hits
    finally:
        again.close()


def test_qdrant_failure_rolls_back_duckdb(service: Service) -> None:
    service.index.drop("v1")  # the next Qdrant write fails
    with pytest.raises(Exception):  # noqa: B017 - whatever qdrant-client raises
        service.upsert_documents(DOCS[:2])
    assert service.store.count_documents() == 0


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
    assert isinstance(service.index, Index) and np.isfinite(result.hits[0].score)
