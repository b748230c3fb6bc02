"""Start-up repair compares ids and content: a replace whose DuckDB commit was lost is re-embedded from DuckDB,
and a clean restart (or a collection from before content hashes) embeds nothing."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from qdrant_client import models

from flywheel.config import Settings
from flywheel.serve.index import point_id
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import CORPUS

DOCS = [Document(i, t, {"n": n}) for n, (i, t) in enumerate(CORPUS)]


@pytest.fixture(params=["local", "edge"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Repair is the same on both embedded engines (it reads and writes only through the index methods)."""
    return settings.model_copy(update={"qdrant_engine": request.param})


def _points(service: Service) -> dict[str, tuple[dict, np.ndarray]]:
    """doc_id -> (payload, vector) of every point of v1, read through the index methods."""
    hits = {h.doc_id: h for h in service.index.search(np.ones(service.encoder.dimension), 1000)}
    ids, vectors = service.index.all_vectors("v1", service.encoder.dimension)
    return {
        i: ({"doc_id": i, "text": hits[i].text, "metadata": hits[i].metadata}, vectors[n]) for n, i in enumerate(ids)
    }


def test_restart_repairs_a_replaced_document_whose_commit_was_lost(settings: Settings) -> None:
    svc = Service.open(settings)
    svc.upsert_documents(DOCS)
    # A crash between the Qdrant upsert and the DuckDB commit of a replace: Qdrant holds the new text and
    # vector, DuckDB still the old row. Counts agree.
    lost = [Document("d1", "a replacement that never committed", {"n": 99}), Document("d3", DOCS[2].text, {})]
    svc.index.upsert("v1", lost, svc.encoder.encode([d.text for d in lost]))
    svc.close()
    again = Service.open(settings)
    try:
        points = _points(again)
        assert set(points) == {d.id for d in DOCS}
        for doc in (DOCS[0], DOCS[2]):
            payload, vector = points[doc.id]
            assert (payload["text"], payload["metadata"]) == (doc.text, doc.metadata)
            expected = again.encoder.encode([doc.text])[0]
            assert float(np.dot(vector, expected) / np.linalg.norm(vector) / np.linalg.norm(expected)) > 0.999
        assert again.search(DOCS[0].text, 1).hits[0].doc_id == "d1"
    finally:
        again.close()


def test_a_clean_restart_embeds_nothing(settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    svc = Service.open(settings)
    svc.upsert_documents(DOCS)
    svc.upsert_documents([Document("d2", "replaced, and committed", {"x": [1.0, "é"]})])
    svc.delete_document("d4")
    svc.close()
    with caplog.at_level(logging.WARNING, logger="flywheel.serve"):
        Service.open(settings).close()
    assert not [r for r in caplog.records if "repair" in r.getMessage()]


def test_points_written_before_content_hashes_are_compared_by_their_payload(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings.model_copy(update={"qdrant_engine": "local"})  # points as an older qdrant-client wrote them
    svc = Service.open(settings)
    svc.upsert_documents(DOCS)
    # Rewrite every point as an older server wrote it (no content hash in the payload); damage one.
    vectors = svc.encoder.encode([d.text for d in DOCS])
    old = [
        models.PointStruct(
            id=point_id(d.id),
            vector=vectors[n].tolist(),
            payload={"doc_id": d.id, "text": d.text if d.id != "d5" else "stale text", "metadata": d.metadata},
        )
        for n, d in enumerate(DOCS)
    ]
    svc.index.client.upsert(svc.index.collection("v1"), points=old, wait=True)
    svc.close()
    with caplog.at_level(logging.WARNING, logger="flywheel.serve"):
        again = Service.open(settings)
    try:
        repairs = [r.getMessage() for r in caplog.records if "repair" in r.getMessage()]
        assert len(repairs) == 1 and "1 changed" in repairs[0], repairs
        assert _points(again)["d5"][0]["text"] == DOCS[4].text
    finally:
        again.close()
