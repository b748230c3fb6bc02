"""POST /ubi/queries: searches another engine answered, logged with their hits, so their UBI events count."""

from __future__ import annotations

from fastapi.testclient import TestClient

from flywheel.cycle.mining import mine_pairs
from tests.api.routes.test_ubi import stored, ubi
from tests.helpers.factories import CORPUS


def query(query_id: str, hits: list[str], **extra: object) -> dict:
    """A UBI query record as an engine's UBI plugin writes it."""
    return {
        "query_id": query_id,
        "user_query": "learn python",
        "client_id": "browser-1",
        "timestamp": "2026-03-01T09:59:59Z",
        "query": '{"match": {"text": "learn python"}}',
        "query_response_hit_ids": hits,
        **extra,
    }


def test_events_of_a_query_flywheel_did_not_serve_count_once_its_hits_came(loaded_api: TestClient) -> None:
    docs = [doc_id for doc_id, _ in CORPUS][:3]
    refused = loaded_api.post("/ubi/events", json=ubi("q-ext-1", docs[1], ordinal=2))
    assert refused.status_code == 422 and "POST /ubi/queries" in refused.json()["detail"]
    answer = loaded_api.post("/ubi/queries", json=query("q-ext-1", docs))
    assert answer.status_code == 200 and answer.json() == {"stored": 1, "duplicates": 0}
    accepted = loaded_api.post("/ubi/events", json=ubi("q-ext-1", docs[1], ordinal=2))
    assert accepted.status_code == 200 and accepted.json()["accepted"] == 1
    assert [(sid, doc, kind) for sid, doc, kind, _ in stored(loaded_api)] == [("q-ext-1", docs[1], "click")]
    # Mined like any other list: the click a positive, the hit shown above it a negative.
    labels = {(p.doc_id, p.label) for p in mine_pairs(loaded_api.app.state.service.store).pairs}
    assert labels == {(docs[1], 1), (docs[0], 0)}
    row = loaded_api.app.state.service.store.query(
        "SELECT model_version, user_id, k FROM searches WHERE search_id = 'q-ext-1'"
    )
    assert row == [("external", "browser-1", 3)]
    # A wrong ordinal is still checked against the hits the engine reported.
    wrong = loaded_api.post("/ubi/events", json=ubi("q-ext-1", docs[2], ordinal=1))
    assert wrong.status_code == 422 and "shown at rank 3" in wrong.json()["detail"]


def test_a_query_sent_again_is_a_duplicate_and_other_hits_under_its_id_a_conflict(loaded_api: TestClient) -> None:
    docs = [doc_id for doc_id, _ in CORPUS][:3]
    assert loaded_api.post("/ubi/queries", json=[query("q-2", docs)]).json() == {"stored": 1, "duplicates": 0}
    again = loaded_api.post("/ubi/queries", json=[query("q-2", docs), query("q-3", docs[:1])])
    assert again.json() == {"stored": 1, "duplicates": 1}
    conflict = loaded_api.post("/ubi/queries", json=[query("q-4", docs), query("q-2", docs[::-1])])
    assert conflict.status_code == 409 and "queries[1]" in conflict.json()["detail"]
    flywheel_search = loaded_api.post("/search", json={"query": "learn python", "k": 2}).json()
    taken = loaded_api.post("/ubi/queries", json=query(flywheel_search["search_id"], docs))
    assert taken.status_code == 409  # an id flywheel answered itself keeps what flywheel showed
    ids = {r[0] for r in loaded_api.app.state.service.store.query("SELECT search_id FROM searches")}
    assert "q-4" not in ids  # all or nothing


def test_bad_queries_are_refused_whole_with_what_to_fix(loaded_api: TestClient) -> None:
    docs = [doc_id for doc_id, _ in CORPUS][:2]
    before = loaded_api.get("/stats").json()
    cases = [
        ([query("q-5", docs), query("q-6", [docs[0], "no-such-doc"])], 422, "unknown doc_id(s) 'no-such-doc'"),
        (query("q-7", [docs[0], docs[0]]), 422, "appears twice"),
        ({"query_id": "q-8", "user_query": "x"}, 422, "query_response_hit_ids"),
        (query("q-9", docs, user_query="   "), 422, "non-blank"),
        (query("q-10", [f"d{i}" for i in range(101)]), 422, "max_k"),
        ([], 422, "must not be empty"),
    ]
    for body, status, needle in cases:
        response = loaded_api.post("/ubi/queries", json=body)
        assert response.status_code == status and needle in response.text, (body, response.text)
    assert loaded_api.get("/stats").json() == before
    alias = loaded_api.post(
        "/ubi/queries", json={"query_id": "q-11", "user_query": "x", "query_response_object_ids": docs}
    )
    assert alias.json() == {"stored": 1, "duplicates": 0}
