"""POST /ubi/events: OpenSearch UBI events become feedback with /feedback's rules (all-or-nothing, idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.cycle.mining import mine_pairs
from tests.helpers.api import search
from tests.helpers.factories import CORPUS, make_documents


def ubi(query_id: str | None, doc_id: str | None, action: str = "click", ordinal: int | None = None, **extra: Any):
    """A UBI event as the spec and the reference JavaScript collector write it."""
    attributes: dict[str, Any] = {"position": {} if ordinal is None else {"ordinal": ordinal}}
    if doc_id is not None:
        attributes["object"] = {"object_id": doc_id, "object_id_field": "doc_id", "description": "a hit"}
    event = {
        "application": "chatbot",
        "action_name": action,
        "client_id": "browser-1",
        "session_id": "session-1",
        "timestamp": "2026-03-01T10:00:00.000Z",
        "message_type": "INFO",
        "message": "",
        "event_attributes": attributes,
        "page_id": "/help",  # not in the spec's list: UBI objects may carry more, and it is ignored
        **extra,
    }
    if query_id is not None:
        event["query_id"] = query_id
    return event


def stored(api: TestClient) -> list[tuple]:
    service = api.app.state.service
    return service.store.query("SELECT search_id, doc_id, type, ts FROM events ORDER BY doc_id, type")


def test_one_event_is_stored_as_feedback_on_the_search_flywheel_served(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3)
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    response = loaded_api.post("/ubi/events", json=ubi(sid, shown[1], ordinal=2))
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "duplicates": 0, "ignored": 0, "ignored_actions": {}}
    [(search_id, doc_id, kind, ts)] = stored(loaded_api)
    assert (search_id, doc_id, kind, ts.isoformat()) == (sid, shown[1], "click", "2026-03-01T10:00:00")
    # In the same tables as /feedback, so a cycle mines it: the click is a positive, the hit above it a negative.
    labels = {(p.doc_id, p.label) for p in mine_pairs(loaded_api.app.state.service.store).pairs}
    assert labels == {(shown[1], 1), (shown[0], 0)}


def test_an_array_maps_action_names_and_counts_what_is_not_feedback(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3)
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    events = [
        ubi(sid, shown[0], "impression", ordinal=1),
        ubi(sid, shown[2], "purchase", ordinal=3),
        ubi(sid, shown[1], "skip"),
        ubi(None, None, "page_exit"),  # no query, no object: fine for an event flywheel ignores
        ubi(sid, shown[0], "impression", ordinal=1, timestamp="2026-03-01T10:00:01Z"),
    ]
    response = loaded_api.post("/ubi/events", json=events)
    assert response.json() == {
        "accepted": 2,
        "duplicates": 0,
        "ignored": 3,
        "ignored_actions": {"impression": 2, "page_exit": 1},
    }
    assert [(d, kind) for _, d, kind, _ in stored(loaded_api)] == [(shown[1], "skip"), (shown[2], "thumbs_up")]


def test_a_resent_event_is_a_duplicate_whatever_the_zone_notation(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=2)
    sid, doc = body["search_id"], body["hits"][0]["doc_id"]
    assert loaded_api.post("/ubi/events", json=[ubi(sid, doc)]).json()["accepted"] == 1
    again = [ubi(sid, doc), ubi(sid, doc, timestamp="2026-03-01T12:00:00+02:00")]
    assert loaded_api.post("/ubi/events", json=again).json() == {
        "accepted": 0,
        "duplicates": 2,
        "ignored": 0,
        "ignored_actions": {},
    }
    later = loaded_api.post("/ubi/events", json=ubi(sid, doc, timestamp="2026-03-01T10:05:00Z"))
    assert later.json()["accepted"] == 1  # another click at another time is another event
    assert len(stored(loaded_api)) == 2


def test_one_bad_event_rejects_the_whole_batch_naming_each(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=2)
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    not_shown = next(d for d, _ in CORPUS if d not in shown)
    events = [
        ubi(sid, shown[0], ordinal=1),
        ubi(sid, shown[1], ordinal=1),  # shown at 2
        ubi(sid, not_shown),
        ubi(None, shown[0]),
        ubi(sid, None),
    ]
    response = loaded_api.post("/ubi/events", json=events)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "nothing was stored" in detail and "events[0]" not in detail
    assert f"events[1] (click): position.ordinal 1 but '{shown[1]}' was shown at rank 2" in detail
    assert f"events[2] (click): object_id '{not_shown}' was not shown" in detail
    assert "events[3] (click): query_id is missing" in detail
    assert "events[4] (click): event_attributes.object.object_id is missing" in detail
    assert stored(loaded_api) == []


def test_a_query_id_flywheel_did_not_serve_is_rejected_with_what_to_send(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=2)
    doc = body["hits"][0]["doc_id"]
    response = loaded_api.post("/ubi/events", json=ubi("opensearch-query-1", doc, ordinal=1))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "query_id 'opensearch-query-1' is not a search flywheel knows" in detail
    assert "search_id of the POST /search answer" in detail
    assert stored(loaded_api) == []


def test_malformed_events_are_422_naming_the_field_and_limits_hold(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_events_per_request=2)
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": make_documents(CORPUS[:3])})
        body = search(api, "python", k=2)
        sid, doc = body["search_id"], body["hits"][0]["doc_id"]
        missing = api.post("/ubi/events", json={"action_name": "click", "query_id": sid})
        assert missing.status_code == 422 and missing.json()["detail"][0]["loc"] == ["body", "one", "timestamp"]
        typed = api.post("/ubi/events", json=[ubi(sid, doc, ordinal="first")])
        assert typed.status_code == 422
        assert typed.json()["detail"][0]["loc"] == ["body", "many", 0, "event_attributes", "position", "ordinal"]
        assert api.post("/ubi/events", json=[]).status_code == 422
        assert api.post("/ubi/events", json=[ubi(sid, doc)] * 3).status_code == 413
        # An integer object_id is read as its text.
        api.post("/documents", json={"documents": [{"id": "42", "text": "python forty two"}]})
        sid = search(api, "python forty two", k=4)["search_id"]
        assert api.post("/ubi/events", json=ubi(sid, 42)).json()["accepted"] == 1
        assert api.get("/stats").json()["events"] == 1
