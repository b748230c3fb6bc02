"""Team-draft interleaving: the merged list, its fairness with identical rankers, and credit to each team."""

from __future__ import annotations

import math
import random

import pytest

from flywheel.scoring.interleaving import (
    CHALLENGER,
    INCUMBENT,
    SHARED,
    bucket,
    common_prefix,
    credit,
    interleave,
    overlap,
    team_draft,
)


def test_merged_list_takes_each_result_once_in_each_rankers_order() -> None:
    incumbent, challenger = list("abcdefgh"), list("cxaybzdw")
    for seed in map(str, range(50)):
        merged = team_draft(incumbent, challenger, 6, seed)
        ids = [doc for doc, _ in merged]
        assert len(ids) == 6 and len(set(ids)) == 6
        for team, ranking in ((INCUMBENT, incumbent), (CHALLENGER, challenger)):
            picks = [doc for doc, t in merged if t == team]
            assert picks == sorted(picks, key=ranking.index)  # a team adds its results best first
            assert set(picks) <= set(ranking)
        counts = [sum(t == team for _, t in merged) for team in (INCUMBENT, CHALLENGER)]
        assert abs(counts[0] - counts[1]) <= 1  # the team with fewer picks always picks next


def test_same_seed_same_list_and_short_rankings_run_out() -> None:
    assert team_draft("abc", "cab", 3, "s1") == team_draft("abc", "cab", 3, "s1")
    merged = team_draft("ab", "bc", 10, "s")
    assert sorted(doc for doc, _ in merged) == ["a", "b", "c"]
    assert team_draft("", "xy", 2, "s") == [("x", CHALLENGER), ("y", CHALLENGER)]


def test_identical_rankers_win_half_the_lists_a_position_biased_user_clicks() -> None:
    """With the same ranking on both sides any win share away from 0.5 is the method's own bias.

    The bound: under fairness each decisive list is a fair coin, so the share of D of them lies within
    4 standard deviations (4 * sqrt(0.25 / D)) of 0.5 except with probability < 1e-4.
    """
    rng = random.Random(7)
    ranking = [f"d{i}" for i in range(10)]
    wins = losses = 0
    for n in range(6000):
        merged = team_draft(ranking, ranking, 10, f"search-{n}")
        teams = {doc: team for doc, team in merged}
        clicks = [(doc, "click") for rank, (doc, _) in enumerate(merged, 1) if rng.random() < 0.6 / rank]
        outcome = credit(teams, clicks)
        wins += outcome == "win"
        losses += outcome == "loss"
    decisive = wins + losses
    assert decisive > 2000
    assert abs(wins / decisive - 0.5) <= 4 * math.sqrt(0.25 / decisive)


def test_what_both_rankings_agree_on_from_the_top_belongs_to_both_teams() -> None:
    assert common_prefix("abcx", "abdy") == 2 and common_prefix("ab", "ba") == 0 and common_prefix("ab", "abc") == 2
    for seed in map(str, range(20)):
        merged = interleave("abcdef", "abxyzw", 6, seed)
        assert [doc for doc, _ in merged] == [doc for doc, _ in team_draft("abcdef", "abxyzw", 6, seed)]
        assert [team for _, team in merged[:2]] == [SHARED, SHARED]
        assert {team for _, team in merged[2:]} <= {INCUMBENT, CHALLENGER}
    # Identical rankers: every result is shared, so no click can ever favour either.
    merged = interleave("abcde", "abcde", 5, "s")
    assert {team for _, team in merged} == {SHARED} and credit(dict(merged), [("a", "click")]) is None


def test_equally_good_but_different_rankers_win_half_the_decided_lists() -> None:
    """Two rankers of the same quality in distribution (each puts the wanted result at a uniformly random rank
    of its top 10, independently); same 4-sigma bound as above."""
    rng = random.Random(11)
    wins = losses = 0
    for n in range(6000):
        docs = [f"d{i}" for i in range(12)]
        a, b = rng.sample(docs, 10), rng.sample(docs, 10)
        wanted = {rng.choice(a), rng.choice(b)}  # one wanted result in each list
        merged = interleave(a, b, 10, f"s{n}")
        clicks = [(d, "click") for r, (d, _) in enumerate(merged, 1) if d in wanted and rng.random() < 1 / r]
        outcome = credit(dict(merged), clicks)
        wins += outcome == "win"
        losses += outcome == "loss"
    decisive = wins + losses
    assert decisive > 1000 and abs(wins / decisive - 0.5) <= 4 * math.sqrt(0.25 / decisive)


def test_a_challenger_that_ranks_the_wanted_result_higher_wins() -> None:
    rng = random.Random(3)
    incumbent = [f"d{i}" for i in range(10)]  # the wanted d7 at rank 8
    challenger = ["d7", *[d for d in incumbent if d != "d7"]]
    outcomes = []
    for n in range(500):
        merged = team_draft(incumbent, challenger, 10, f"s{n}")
        clicks = [(doc, "click") for rank, (doc, _) in enumerate(merged, 1) if doc == "d7" and rng.random() < 1 / rank]
        outcomes.append(credit(dict(merged), clicks))
    assert outcomes.count("loss") == 0 and outcomes.count("win") > 100


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([("c1", "click")], "win"),
        ([("i1", "click")], "loss"),
        ([("c1", "click"), ("i1", "click")], "tie"),
        ([("c1", "click"), ("c1", "click"), ("i1", "click")], "tie"),  # a double click is one click
        ([("c1", "click"), ("c1", "thumbs_up"), ("i1", "click")], "win"),
        ([("c1", "thumbs_down")], "loss"),
        ([("i1", "click"), ("i1", "thumbs_down"), ("c1", "click")], "win"),
        ([("c1", "skip"), ("i1", "skip")], None),  # skips carry no credit
        ([("elsewhere", "click")], None),
        ([], None),
    ],
)
def test_credit_on_hand_built_lists(events: list[tuple[str, str]], expected: str | None) -> None:
    teams = {"c1": CHALLENGER, "c2": CHALLENGER, "i1": INCUMBENT, "i2": INCUMBENT}
    assert credit(teams, events) == expected


def test_bucket_is_stable_and_spreads_evenly() -> None:
    assert bucket("abc") == bucket("abc") and bucket("abc") != bucket("abd")
    values = [bucket(f"search-{i}") for i in range(20000)]
    assert all(0 <= v < 1 for v in values)
    share = sum(v < 0.3 for v in values) / len(values)
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / len(values))


def test_overlap_counts_shared_results_of_the_top_k() -> None:
    assert overlap("abcd", "xbay", 3) == 2 and overlap("ab", "cd", 2) == 0
