"""POST /documents and DELETE /documents/{doc_id}: counts, replacement, deletion, limits and 422s that write nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.api import search
from tests.helpers.factories import CORPUS, make_documents


def test_post_documents_counts_and_replaces(api: TestClient) -> None:
    assert api.post("/documents", json={"documents": make_documents()}).json() == {"upserted": len(CORPUS)}
    again = api.post("/documents", json={"documents": [{"id": "d1", "text": "Completely new text about tea"}]})
    assert again.json() == {"upserted": 1}
    assert api.get("/stats").json()["documents"] == len(CORPUS)
    hits = search(api, "Completely new text about tea", k=len(CORPUS))["hits"]
    assert len(hits) == len(CORPUS)  # replaced, not added
    assert (hits[0]["doc_id"], hits[0]["text"]) == ("d1", "Completely new text about tea")  # its own text: cosine 1
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-4) and hits[0]["metadata"] == {}


def test_delete_document_then_404(loaded_api: TestClient) -> None:
    assert loaded_api.delete("/documents/d3").status_code == 204
    assert loaded_api.get("/healthz").json()["documents"] == len(CORPUS) - 1
    ids = {h["doc_id"] for h in search(loaded_api, "lose weight", k=len(CORPUS))["hits"]}
    assert ids == {i for i, _ in CORPUS} - {"d3"}
    missing = loaded_api.delete("/documents/d3")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "document 'd3' does not exist"}


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"id": "", "text": "x"}, "at least 1 character"),
        ({"id": "a", "text": "   "}, "blank"),
        ({"id": "a", "text": "x" * 20_001}, "limit is 20000"),
        ({"id": "a" * 300, "text": "x"}, "over 256"),
        ({"id": "a", "text": "x", "metadata": "nope"}, "dictionary"),
        ({"id": "a", "text": "x", "metadata": {"blob": "z" * 9000}}, "metadata"),
        ({"id": "a", "text": "x", "extra": 1}, "Extra inputs"),
    ],
)
def test_documents_reject_bad_input_and_write_nothing(api: TestClient, doc: dict, fragment: str) -> None:
    good = {"id": "ok", "text": "a fine document"}
    response = api.post("/documents", json={"documents": [good, doc]})
    assert response.status_code == 422, response.text
    assert fragment in response.text
    assert api.get("/stats").json()["documents"] == 0


def test_batch_over_limit_is_413(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_documents_per_request=3)
    with TestClient(create_app(settings)) as api:
        too_many = api.post("/documents", json={"documents": make_documents()})
        assert too_many.status_code == 413
        assert too_many.json() == {"detail": "8 documents in one request; the limit is 3"}
        assert api.get("/stats").json()["documents"] == 0


def test_empty_batch_is_422(loaded_api: TestClient) -> None:
    response = loaded_api.post("/documents", json={"documents": []})
    assert (response.status_code, response.json()) == (422, {"detail": "documents must not be empty"})
