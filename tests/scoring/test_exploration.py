"""Exploration's draw: the top stays, the last positions come from just below it, the same on every rerun."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flywheel.errors import InvalidInput
from flywheel.scoring.exploration import AskCounts, Exploration


@given(
    k=st.integers(2, 30),
    slots=st.integers(1, 10),
    depth=st.integers(1, 40),
    available=st.integers(1, 80),
    search_id=st.text(min_size=1, max_size=12),
)
def test_the_top_stays_and_the_rest_is_drawn_from_just_below(
    k: int, slots: int, depth: int, available: int, search_id: str
) -> None:
    exploration = Exploration(share=1.0, slots=slots, depth=depth)
    ranked = list(range(min(available, exploration.fetch(k))))
    shown = exploration.arrange(ranked, k, search_id)
    keep = max(1, k - slots)
    assert shown[:keep] == ranked[:keep]
    assert len(shown) == min(k, len(ranked))
    assert len(set(shown)) == len(shown)
    assert all(keep <= r < k + depth for r in shown[keep:])
    assert shown == exploration.arrange(ranked, k, search_id)  # seeded by the search id


def test_the_draw_reaches_below_k_and_varies_by_search() -> None:
    exploration = Exploration(share=1.0, slots=3, depth=20)
    ranked = list(range(30))
    lists = {tuple(exploration.arrange(ranked, 10, f"s{n}")) for n in range(200)}
    drawn = {r for shown in lists for r in shown[7:]}
    assert len(lists) > 150
    assert drawn == set(range(7, 30))  # every candidate rank, from 8 to k + depth, is shown sometimes


def test_the_share_of_searches_that_explore_is_the_setting() -> None:
    ids = [f"search-{n}" for n in range(4000)]
    share = sum(Exploration(share=0.25).explores(i, 10) for i in ids) / len(ids)
    assert 0.22 < share < 0.28
    assert not any(Exploration(share=0.0).explores(i, 10) for i in ids)
    assert not any(Exploration(share=1.0).explores(i, 1) for i in ids)  # one result: nothing to keep


def test_with_repeats_only_questions_asked_often_enough_before_explore() -> None:
    exploration = Exploration(share=1.0, repeats=2)
    assert [exploration.explores("s", 10, before) for before in range(4)] == [False, False, True, True]
    ids = [f"search-{n}" for n in range(4000)]
    share = sum(Exploration(share=0.5, repeats=1).explores(i, 10, 5) for i in ids) / len(ids)
    assert 0.46 < share < 0.54  # a repeat explores at the share, as any search does without repeats


def test_ask_counts_count_questions_by_their_normalised_text() -> None:
    asked = AskCounts([("How do I learn Python?", 2), ("other", 1)])
    assert asked.see("how do i learn python") == 2  # same question: case and punctuation do not matter
    assert asked.see("  HOW do I learn   python!! ") == 3
    assert asked.see("a new question") == 0
    assert asked.see("a new question") == 1


@given(st.lists(st.sampled_from([f"q{n}" for n in range(40)]), max_size=300), st.integers(1, 12))
def test_ask_counts_stay_bounded(queries: list[str], bound: int) -> None:
    asked = AskCounts(max_questions=bound)
    for q in queries:
        asked.see(q)
        assert len(asked) <= bound


def test_a_repeated_question_outlives_the_one_off_ones() -> None:
    asked = AskCounts(max_questions=4)
    for _ in range(3):
        asked.see("head question")
    for n in range(100):
        asked.see(f"one-off {n}")
    assert asked.see("head question") == 3


@pytest.mark.parametrize(
    ("field", "value"), [("share", 1.5), ("share", -0.1), ("slots", 0), ("depth", 0), ("repeats", -1)]
)
def test_settings_that_cannot_explore_are_refused(field: str, value: float) -> None:
    with pytest.raises(InvalidInput, match=field):
        Exploration(**{field: value})
