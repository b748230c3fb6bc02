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


def _points(service: Service) -> dict[str, tuple[dict, np.ndarray]]:
    points, _ = service.index.client.scroll(
        service.index.collection("v1"), limit=1000, with_payload=True, with_vectors=True
    )
    return {p.payload["doc_id"]: (p.payload, np.asarray(p.vector, np.float32)) for p in points}


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
