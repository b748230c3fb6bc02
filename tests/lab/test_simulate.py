"""Simulated users over the real API: deterministic, position-biased, skips above the click, noise."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient

from flywheel.errors import InvalidInput
from flywheel.lab.simulate import SimulationStats, UserModel, _behave, simulate
from tests.helpers.factories import world_documents, world_queries


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
    assert api.get("/stats").json()["events"] == 2 * stored  # new searches, new event ids: nothing deduplicated
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


def test_event_ids_are_stable_per_search_so_a_resend_is_deduplicated(api: TestClient) -> None:
    queries, relevant = _load(api)
    perfect = UserModel(click_prob=1.0, decay=1.0, wrong_click=0.0, no_click=0.0)
    qid = next(iter(queries))
    body = api.post("/search", json={"query": queries[qid], "k": 5}).json()
    events = _behave(body, relevant[qid], perfect, random.Random(0), SimulationStats())
    assert events == _behave(body, relevant[qid], perfect, random.Random(0), SimulationStats())
    first = api.post("/feedback", json={"events": events}).json()
    again = api.post("/feedback", json={"events": events}).json()
    assert first == {"accepted": len(events), "duplicates": 0}
    assert again == {"accepted": 0, "duplicates": len(events)}


def _hits(relevant_rank: int, k: int = 10) -> dict:
    """A result list with one relevant document at `relevant_rank` (1-based)."""
    ids = [("rel" if r == relevant_rank else f"x{r}") for r in range(1, k + 1)]
    return {"search_id": "s", "hits": [{"doc_id": d} for d in ids]}


@pytest.mark.parametrize("rank", [1, 3, 6])
def test_click_probability_decays_with_rank_and_skips_cover_the_results_above(rank: int) -> None:
    user = UserModel(click_prob=0.9, decay=0.7, wrong_click=0.0, no_click=0.0)
    rng, stats, n = random.Random(rank), SimulationStats(), 4000
    clicks = 0
    for _ in range(n):
        events = _behave(_hits(rank), {"rel"}, user, rng, stats)
        if events:
            clicks += 1
            assert [e["type"] for e in events] == ["skip"] * (rank - 1) + ["click"]
            assert [e["doc_id"] for e in events] == [f"x{r}" for r in range(1, rank)] + ["rel"]
    expected = user.click_probability(rank)
    assert expected == pytest.approx(0.9 * 0.7 ** (rank - 1))
    assert abs(clicks / n - expected) < 4 * (expected * (1 - expected) / n) ** 0.5 + 1e-9
    assert stats.skips == clicks * (rank - 1) and stats.abandoned == n - clicks


def test_noise_rates_match_the_model() -> None:
    rng, stats, n = random.Random(7), SimulationStats(), 4000
    user = UserModel(click_prob=1.0, decay=1.0, wrong_click=0.1, no_click=0.2)
    for _ in range(n):
        _behave(_hits(2), {"rel"}, user, rng, stats)
    # No-click first (20%), then a wrong click on rank 1 with 10% of the rest: 8% of all searches.
    assert abs(stats.abandoned / n - 0.2) < 0.03
    assert abs(stats.wrong_clicks / n - 0.08) < 0.02
    assert stats.clicks == n - stats.abandoned


@pytest.mark.parametrize("field", ["click_prob", "decay", "wrong_click", "no_click"])
def test_user_model_rejects_values_that_are_not_probabilities(field: str) -> None:
    with pytest.raises(InvalidInput, match=f"UserModel.{field} must be between 0 and 1"):
        UserModel(**{field: 1.5})
