"""Filtered search: metadata equality and any-of, k hits among the allowed documents, the filter logged."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

DOCS = [
    {
        "id": f"{tenant}-{n}",
        "text": f"how do I reset my password, variant {n}",
        "metadata": {"tenant": tenant, "lang": lang, "n": n, "kb": {"public": n % 2 == 0}},
    }
    for tenant in ("acme", "globex")
    for n, lang in enumerate(["en", "de", "en", "fr", "en"])
]


def test_a_filter_keeps_only_matching_documents_and_still_returns_k(api: TestClient) -> None:
    assert api.post("/documents", json={"documents": DOCS}).status_code == 200
    body = api.post("/search", json={"query": "reset password", "k": 3, "filter": {"tenant": "acme"}}).json()
    assert len(body["hits"]) == 3 and {h["metadata"]["tenant"] for h in body["hits"]} == {"acme"}
    any_of = api.post("/search", json={"query": "reset password", "k": 10, "filter": {"lang": ["de", "fr"]}}).json()
    assert sorted(h["doc_id"] for h in any_of["hits"]) == ["acme-1", "acme-3", "globex-1", "globex-3"]
    both = {"tenant": "globex", "lang": "en", "kb.public": True}
    hits = api.post("/search", json={"query": "reset password", "k": 10, "filter": both}).json()["hits"]
    assert sorted(h["doc_id"] for h in hits) == ["globex-0", "globex-2", "globex-4"]
    assert api.post("/search", json={"query": "reset", "filter": {"tenant": "initech"}}).json()["hits"] == []
    service = api.app.state.service
    rows = service.store.query("SELECT filter FROM searches WHERE filter IS NOT NULL ORDER BY ts")
    assert json.loads(rows[0][0]) == {"tenant": "acme"} and len(rows) == 4
    impressions = service.store.query(
        "SELECT count(*) FROM impressions JOIN searches USING (search_id) WHERE filter LIKE '%acme%'"
    )
    assert impressions[0][0] == 3  # only what the filter allowed was shown, so only that can become a skip


def test_a_malformed_filter_is_a_422_saying_what_to_fix(api: TestClient) -> None:
    for bad, needle in (
        ({"tenant": {"$ne": "acme"}}, "filter"),
        ({"bad key!": "x"}, "filter key"),
        ({"lang": []}, "1 to 100 values"),
        ({"lang": [["en"]]}, "filter"),
    ):
        response = api.post("/search", json={"query": "reset", "filter": bad})
        assert response.status_code == 422 and needle in response.text, (bad, response.text)
    assert api.app.state.service.store.query("SELECT count(*) FROM searches")[0][0] == 0
