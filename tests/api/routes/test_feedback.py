"""POST /feedback: accepted and duplicate counts, event types, and batches rejected whole."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.api import search
from tests.helpers.factories import CORPUS, make_documents, make_event


def test_feedback_accepts_and_deduplicates(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3)
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    first = make_event(sid, shown[1], "click", ts="2026-01-02T03:04:05+02:00")
    second = make_event(sid, shown[0], "skip")
    response = loaded_api.post("/feedback", json={"events": [first, second, first]})
    assert response.json() == {"accepted": 2, "duplicates": 1}
    again = loaded_api.post("/feedback", json={"events": [first, second]})
    assert again.json() == {"accepted": 0, "duplicates": 2}
    assert loaded_api.get("/stats").json()["events"] == 2


def test_feedback_event_types(loaded_api: TestClient) -> None:
    body = search(loaded_api, "python", k=1)
    doc = body["hits"][0]["doc_id"]
    events = [make_event(body["search_id"], doc, t) for t in ("click", "skip", "thumbs_up", "thumbs_down")]
    assert loaded_api.post("/feedback", json={"events": events}).json()["accepted"] == 4
    bad = loaded_api.post("/feedback", json={"events": [make_event(body["search_id"], doc, "like")]})
    assert bad.status_code == 422
    assert "click" in bad.text


def test_feedback_unknown_search_or_unshown_doc_rejects_whole_batch(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=2)
    sid, shown = body["search_id"], {h["doc_id"] for h in body["hits"]}
    not_shown = next(d for d, _ in CORPUS if d not in shown)
    good = make_event(sid, next(iter(shown)))
    bad_doc = make_event(sid, not_shown)
    bad_search = make_event("no-such-search", next(iter(shown)))
    response = loaded_api.post("/feedback", json={"events": [good, bad_doc, bad_search]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    # Quoted as the message quotes them: a bare "e10" can also occur inside a random hex search id.
    named = [f"(event_id '{e['event_id']}')" for e in (good, bad_doc, bad_search)]
    assert named[1] in detail and named[2] in detail
    assert named[0] not in detail
    assert "nothing was stored" in detail
    assert loaded_api.get("/stats").json()["events"] == 0


def test_batch_over_limit_is_413(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_events_per_request=2)
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": make_documents(CORPUS[:3])})
        sid = search(api, "python", k=2)["search_id"]
        events = [make_event(sid, "d1") for _ in range(3)]
        response = api.post("/feedback", json={"events": events})
        assert response.status_code == 413
        assert response.json() == {"detail": "3 events in one request; the limit is 2"}
        assert api.get("/stats").json()["events"] == 0


def test_empty_batch_is_422(loaded_api: TestClient) -> None:
    response = loaded_api.post("/feedback", json={"events": []})
    assert (response.status_code, response.json()) == (422, {"detail": "events must not be empty"})
