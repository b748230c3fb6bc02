"""Realistic simulated traffic: Zipf popularity with repeats, the position-based model, abandonment, thumbs, order."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flywheel.errors import InvalidInput
from flywheel.lab.simulate import (
    SimulationStats,
    Traffic,
    UserModel,
    _behave,
    popularity_order,
    query_sequence,
    simulate_traffic,
)
from tests.helpers.factories import world_documents, world_queries


def _list(relevant_ranks: set[int], k: int = 10) -> tuple[dict[str, Any], set[str]]:
    """A synthetic result list: documents r1..rk, of which `relevant_ranks` (1-based) are relevant."""
    return {"search_id": "s", "hits": [{"doc_id": f"r{r}"} for r in range(1, k + 1)]}, {f"r{r}" for r in relevant_ranks}


def _run(user: UserModel, relevant_ranks: set[int], n: int, seed: int = 0) -> tuple[list[list[dict]], SimulationStats]:
    """`n` users reacting to the same synthetic list; their events and the stats."""
    body, relevant = _list(relevant_ranks)
    rng, stats = random.Random(seed), SimulationStats()
    return [_behave(body, relevant, user, rng, stats) for _ in range(n)], stats


def test_zipf_asks_the_head_query_far_more_often_and_repeats_queries() -> None:
    ids = [f"q{i:03d}" for i in range(500)]
    traffic = Traffic(popularity="zipf", zipf_exponent=1.0, searches=5000)
    asked = query_sequence(ids, traffic, seed=4)
    counts = Counter(asked)
    order = popularity_order(ids, seed=4)
    assert len(asked) == 5000 and len(counts) < 500  # repeats, and some tail queries are never asked
    assert order != ids and order[0] != ids[0] and sorted(order) == ids  # a shuffle, not the file's order
    # Weight 1/i: the head is ~1/H(500) = 14.7% of searches (735 of 5000), rank 2 about half of that.
    head, second = counts[order[0]], counts[order[1]]
    assert 620 < head < 850 and 1.6 < head / second < 2.5
    tail = [counts[q] for q in order[250:]]  # expected ~0.002 of the traffic each
    assert head > 100 * max(1, sum(tail) / len(tail))
    assert query_sequence(ids, traffic, seed=4) == asked and query_sequence(ids, traffic, seed=5) != asked
    steeper = Counter(query_sequence(ids, Traffic(popularity="zipf", zipf_exponent=2.0, searches=5000), seed=4))
    assert steeper[order[0]] > 2 * head  # 1/zeta(2) = 61% of searches


def test_uniform_mode_is_the_queries_in_order_round_after_round() -> None:
    ids = ["b", "a", "c"]
    assert query_sequence(ids, Traffic(rounds=2)) == ["b", "a", "c", "b", "a", "c"]
    assert query_sequence(ids, Traffic(searches=4)) == ["b", "a", "c", "b"]


@pytest.mark.parametrize("eta", [1.0, 0.5, 2.0])
def test_pbm_clicks_per_rank_follow_the_propensity_curve(eta: float) -> None:
    """Every result relevant: the click rate at rank r is click_prob * (1/r)**eta (tolerance 0.015, ~4 sigma)."""
    user = UserModel(examination="pbm", eta=eta, click_prob=0.9, wrong_click=0.0, no_click=0.0)
    n = 20_000
    lists, stats = _run(user, set(range(1, 11)), n, seed=11)
    per_rank = Counter(int(e["doc_id"][1:]) for events in lists for e in events if e["type"] == "click")
    for rank in range(1, 11):
        expected = 0.9 * (1 / rank) ** eta
        assert user.click_probability(rank) == pytest.approx(expected)
        assert abs(per_rank[rank] / n - expected) < 0.015, (rank, per_rank[rank] / n, expected)
    several = sum(1 for events in lists if sum(e["type"] == "click" for e in events) > 1)
    assert several > 0.1 * n and stats.clicks == sum(per_rank.values())  # PBM: several clicks per list


def test_pbm_skips_only_examined_unclicked_results_above_a_click() -> None:
    """One relevant result at rank 5: each rank r above it is examined (and skipped) with 1/r, not always."""
    user = UserModel(examination="pbm", eta=1.0, click_prob=1.0, wrong_click=0.0, no_click=0.0)
    lists, stats = _run(user, {5}, 20_000, seed=2)
    clicked_lists = [events for events in lists if any(e["type"] == "click" for e in events)]
    assert abs(len(clicked_lists) / 20_000 - 0.2) < 0.015  # P(examine rank 5) = 1/5
    for events in lists:
        ranks = {e["type"]: [] for e in events}
        for e in events:
            ranks[e["type"]].append(int(e["doc_id"][1:]))
        assert ranks.get("click", []) in ([], [5])
        assert all(r < 5 for r in ranks.get("skip", [])) and ("skip" not in ranks or "click" in ranks)
    mean_skips = sum(sum(e["type"] == "skip" for e in ev) for ev in clicked_lists) / len(clicked_lists)
    assert abs(mean_skips - (1 + 1 / 2 + 1 / 3 + 1 / 4)) < 0.1  # 2.08; the cascade would send 4
    cascade, _ = _run(UserModel(click_prob=1.0, decay=1.0, wrong_click=0.0, no_click=0.0), {5}, 50)
    assert all([e["type"] for e in events] == ["skip"] * 4 + ["click"] for events in cascade)
    assert stats.skips == sum(sum(e["type"] == "skip" for e in ev) for ev in lists)


def test_same_seed_same_events_other_seed_other_events() -> None:
    user = UserModel(examination="pbm", thumbs_up=0.2, thumbs_down=0.1)
    first, stats = _run(user, {2, 5, 9}, 500, seed=3)
    again, stats_again = _run(user, {2, 5, 9}, 500, seed=3)
    other, _ = _run(user, {2, 5, 9}, 500, seed=4)
    assert first == again and vars(stats) == vars(stats_again) and first != other
    # Ids come from (search, document, type): the synthetic lists all have search id "s", so ids repeat exactly
    # where (document, type) does.
    ids = {e["event_id"] for events in first for e in events}
    assert len(ids) == len({(e["doc_id"], e["type"]) for events in first for e in events})


def test_abandonment_and_thumbs_rates_match_their_settings() -> None:
    """Every rank examined (eta 0): rates are measured against what they are defined on (tolerance 0.02)."""
    user = UserModel(
        examination="pbm", eta=0.0, click_prob=0.8, wrong_click=0.1, no_click=0.2, thumbs_up=0.3, thumbs_down=0.25
    )
    n = 10_000
    lists, stats = _run(user, {1, 3, 5, 7, 9}, n, seed=5)
    engaged = n - sum(1 for events in lists if not events)
    assert abs(stats.abandoned / n - 0.2) < 0.02  # a click somewhere is near certain once the user looks
    relevant_clicks = stats.clicks - stats.wrong_clicks
    assert abs(stats.thumbs_up / relevant_clicks - 0.3) < 0.02
    assert abs(stats.thumbs_down / (5 * engaged) - 0.25) < 0.02  # 5 non-relevant results examined per list
    assert abs(stats.wrong_clicks / (5 * engaged) - 0.1) < 0.02
    for events in lists:  # a thumbs_up follows its click, on a relevant result only
        for i, e in enumerate(events):
            if e["type"] == "thumbs_up":
                assert events[i - 1]["type"] == "click" and events[i - 1]["doc_id"] == e["doc_id"]
                assert int(e["doc_id"][1:]) % 2 == 1
            if e["type"] == "thumbs_down":
                assert int(e["doc_id"][1:]) % 2 == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: Traffic(popularity="pareto"),
        lambda: Traffic(zipf_exponent=0),
        lambda: Traffic(searches=0),
        lambda: Traffic(rounds=0),
        lambda: UserModel(examination="dbn"),
        lambda: UserModel(eta=-1),
        lambda: UserModel(eta=float("nan")),
        lambda: UserModel(thumbs_up=1.5),
        lambda: UserModel(thumbs_down=-0.1),
    ],
)
def test_bad_traffic_settings_are_refused(make: Any) -> None:
    with pytest.raises(InvalidInput, match="must be"):
        make()


def test_realistic_traffic_through_the_api_is_accepted_in_time_order(api: TestClient) -> None:
    api.post("/documents", json={"documents": world_documents()})
    queries, relevant = world_queries()
    user = UserModel(examination="pbm", eta=1.0, wrong_click=0.1, no_click=0.1, thumbs_up=0.5, thumbs_down=0.2)
    traffic = Traffic(popularity="zipf", zipf_exponent=1.0, searches=60, user=user)
    stats = simulate_traffic(api, queries, relevant, traffic, seed=9)
    sent = stats.clicks + stats.skips + stats.thumbs_up + stats.thumbs_down
    assert stats.searches == 60 and stats.accepted == sent > 0 and stats.duplicates == 0
    assert stats.distinct_queries < 60 and stats.thumbs_up > 0 and stats.thumbs_down > 0
    store = api.app.state.service.store
    logged = [q for (q,) in store.query("SELECT query FROM searches ORDER BY ts, search_id")]
    assert logged == [queries[q] for q in query_sequence(queries, traffic, seed=9)]  # the log keeps the order
    types = dict(store.query("SELECT type, count(*) FROM events GROUP BY type"))
    assert types == {
        k: v
        for k, v in {
            "click": stats.clicks,
            "skip": stats.skips,
            "thumbs_up": stats.thumbs_up,
            "thumbs_down": stats.thumbs_down,
        }.items()
        if v
    }
    # Every event comes after its search (one search, then its events, then the next search).
    late = store.query("SELECT count(*) FROM events e JOIN searches s USING (search_id) WHERE e.ts < s.ts")
    assert late == [(0,)]
