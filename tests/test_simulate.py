"""Simulated users over the real API: deterministic, position-biased, skips above the click, noise."""

from __future__ import annotations

from fastapi.testclient import TestClient

from flywheel.simulate import UserModel, simulate
from tests.conftest import world_documents, world_queries


def _load(api: TestClient) -> tuple[dict, dict]:
    api.post("/documents", json={"documents": world_documents()})
    return world_queries()


def test_same_seed_same_clicks(api: TestClient) -> None:
    queries, relevant = _load(api)
    subset = dict(list(queries.items())[:20])
    first = simulate(api, subset, relevant, seed=3)
    stored = api.get("/stats").json()["events"]
    again = simulate(api, subset, relevant, seed=3)
    assert vars(first) == vars(again)
    assert api.get("/stats").json()["events"] == 2 * stored  # fresh event ids: nothing deduplicated
    assert first.accepted == first.clicks + first.skips and first.duplicates == 0


def test_perfect_users_click_first_relevant_and_skip_above(api: TestClient) -> None:
    queries, relevant = _load(api)
    perfect = UserModel(click_prob=1.0, decay=1.0, wrong_click=0.0, no_click=0.0)
    stats = simulate(api, queries, relevant, perfect)
    assert stats.wrong_clicks == 0
    assert stats.clicks == stats.relevant_shown  # every list with a relevant hit got exactly one click
    rows = api.app.state.service.store.query(
        """SELECT e.type, s.query, d.metadata->>'topic' FROM events e
           JOIN searches s USING (search_id) JOIN documents d ON d.id = e.doc_id"""
    )
    on_topic = [(kind, topic in query.split()) for kind, query, topic in rows]
    assert {kind for kind, _ in on_topic} == {"click", "skip"}
    assert all(ok for kind, ok in on_topic if kind == "click")
    assert not any(ok for kind, ok in on_topic if kind == "skip")


def test_noise_and_abandonment(api: TestClient) -> None:
    queries, relevant = _load(api)
    noisy = simulate(api, queries, relevant, UserModel(no_click=0.5, wrong_click=0.2), seed=1)
    assert noisy.abandoned > 0 and noisy.wrong_clicks > 0
    assert noisy.clicks + noisy.abandoned == noisy.searches
