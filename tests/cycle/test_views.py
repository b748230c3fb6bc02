"""The gate's two retrieval views: the next-traffic split by time, the MDE, the parts, and the retrieval-led gate."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.cycle.evaluation import minimal_detectable_effect, next_traffic_view, unseen_view, view_block
from flywheel.cycle.gate import gate_checks, lead_view, retrieval_checks
from flywheel.cycle.mining import LoggedSearch, Pair, mine_pairs
from flywheel.serve.store import Store
from flywheel.types import Event, Impression


def test_the_latest_searches_are_held_out_as_they_came_and_never_mined(store: Store) -> None:
    for n in range(10):  # ten searches in time order, each with a click on "b" at rank 2
        sid = f"s{n}"
        store.log_search(
            sid,
            "same question" if n % 2 else f"question {n}",
            3,
            "v1",
            [Impression(1, "a", 0.9), Impression(2, "b", 0.8), Impression(3, "c", 0.7)],
        )
        store.add_events([Event(f"e{n}", sid, "b", "click")])
    mined = mine_pairs(store, next_traffic_percent=30)
    assert [s.search_id for s in mined.next_traffic] == ["s7", "s8", "s9"]
    # Every shown result is judged (clicked, or shown and passed over), the one below the click too.
    assert all(s.clicked == frozenset({"b"}) and s.ranks == {"a": 1, "b": 2, "c": 3} for s in mined.next_traffic)
    assert mined.shown["same question"] == {"a", "b", "c"} and "question 8" not in mined.shown
    assert mined.counts["searches"] == 7 and mined.counts["next_traffic_searches"] == 3
    assert {p.group for p in mined.pairs} == {"same question", *(f"question {n}" for n in (0, 2, 4, 6))}
    assert mined.next_traffic_start is not None
    assert mine_pairs(store).next_traffic == [] and mine_pairs(store).counts["searches"] == 10


def _scores(values: list[float]) -> dict[str, np.ndarray]:
    v = np.asarray(values, dtype=float)
    return {"query_ids": np.array([f"q{i}" for i in range(len(v))], dtype=object), "ndcg@10": v, "mrr@10": v}


def test_the_mde_follows_the_spread_and_the_size_and_stands_in_for_an_identical_candidate() -> None:
    rng = np.random.default_rng(0)
    inc = rng.uniform(0, 1, 400)
    noisy = inc + rng.normal(0, 0.2, 400)
    mde = minimal_detectable_effect(inc, noisy)
    assert mde == pytest.approx(2.8016 * np.std(noisy - inc, ddof=1) / 20, rel=1e-3)
    assert minimal_detectable_effect(inc[:100], noisy[:100]) > mde  # less data: only larger effects show
    assert minimal_detectable_effect(inc, inc) == pytest.approx(2.8016 * np.std(inc, ddof=1) / 20, rel=1e-3)
    assert minimal_detectable_effect(inc[:1], inc[:1]) is None


def test_a_view_reports_its_parts_apart() -> None:
    block = view_block(
        _scores([0.2, 0.2, 0.5, 0.5]), _scores([0.8, 0.8, 0.5, 0.5]), 0, {"seen": {"q0", "q1"}, "new": {"q2", "q3"}}
    )
    assert block["parts"]["seen"]["delta"] == pytest.approx(0.6) and block["parts"]["new"]["delta"] == 0
    assert block["ndcg@10"]["delta"] == pytest.approx(0.3) and block["n_queries"] == 4


def _pair(group: str, doc: str, label: int) -> Pair:
    return Pair(group, group, doc, "", label, label, 1 - label, 1)


def test_unseen_queries_are_split_by_whether_their_clicked_documents_were_clicked_in_training() -> None:
    train = [_pair("t1", "a", 1)]
    heldout = [_pair("h1", "a", 1), _pair("h2", "b", 1), _pair("h2", "c", 0)]
    seen: list[dict] = []
    judged_sets: list[dict | None] = []

    def score(side: str, queries: dict, relevant: dict, judged: dict | None = None) -> dict[str, np.ndarray]:
        seen.append(relevant)
        judged_sets.append(judged)
        ids = sorted(queries)
        return {
            "query_ids": np.array(ids, dtype=object),
            "ndcg@10": np.array([1.0 if side == "candidate" else 0.5] * len(ids)),
        }

    view = unseen_view(score, heldout, train, 0)
    assert seen[0] == {"h1": {"a"}, "h2": {"b"}}  # clicks are the relevant documents; skips are not
    assert judged_sets[:2] == [None, None] and judged_sets[2] == {"h1": ["a"], "h2": ["b", "c"]}
    assert view["judged"]["n_queries"] == 2
    assert view["parts"]["clicked_in_training"]["n_queries"] == 1
    assert view["parts"]["not_clicked_in_training"]["n_queries"] == 1

    searches = [LoggedSearch(f"s{i}", "t1" if i < 3 else "new", "q", frozenset({"a"})) for i in range(5)]
    traffic = next_traffic_view(score, searches, train, 0)
    assert traffic["n_queries"] == 5 and traffic["distinct_queries"] == 2
    assert traffic["parts"]["repeated_queries"]["n_queries"] == 3 and traffic["parts"]["new_queries"]["n_queries"] == 2


def test_the_same_traffic_gets_the_same_next_traffic_ci_whatever_its_search_ids() -> None:
    """Search ids are random: the view must not let them reorder the per-search values its bootstrap draws."""

    def score(side: str, queries: dict, relevant: dict, judged: dict | None = None) -> dict[str, np.ndarray]:
        ids = sorted(queries)  # as `retrieval_scores` orders its rows
        step = 3 if side == "candidate" else 7  # the change differs from query to query
        value = {f"q{i}": (i * step % 11) / 10 for i in range(11)}
        return {"query_ids": np.array(ids, dtype=object), "ndcg@10": np.array([value[queries[q]] for q in ids])}

    def view() -> dict:
        searches = [LoggedSearch(uuid.uuid4().hex, f"g{i % 11}", f"q{i * 5 % 11}", frozenset({"a"})) for i in range(60)]
        return next_traffic_view(score, searches, [], 0)

    first, again = view(), view()
    assert first["ndcg@10"]["ci95"][0] < first["ndcg@10"]["ci95"][1]
    assert first["ndcg@10"]["ci95"] == again["ndcg@10"]["ci95"]
    assert first["judged"]["ndcg@10"]["ci95"] == again["judged"]["ndcg@10"]["ci95"]


def _view(n: int, inc: float, cand: float, ci: tuple[float, float]) -> dict:
    """A view block shaped as `view_block` writes it."""
    return {
        "n_queries": n,
        "incumbent": {"ndcg@10": inc},
        "candidate": {"ndcg@10": cand},
        "delta": {"ndcg@10": {"mean": cand - inc, "ci95": list(ci)}},
        "ndcg@10": {"incumbent": inc, "candidate": cand, "delta": cand - inc, "ci95": list(ci)},
        "mde": {"ndcg@10": 0.02},
    }


def test_the_retrieval_gate_needs_a_gain_whose_ci_excludes_zero_and_no_loss_elsewhere() -> None:
    s = Settings()
    better = {"next_traffic": _view(200, 0.60, 0.70, (0.05, 0.15)), "unseen": _view(80, 0.5, 0.505, (-0.01, 0.02))}
    checks = retrieval_checks(better, None, s)
    assert [c.name for c in checks] == ["ndcg_improvement", "unseen_guard"] and all(c.passed for c in checks)
    assert "detectable at this size: +0.020" in checks[0].detail

    unsure = {**better, "next_traffic": _view(200, 0.60, 0.63, (-0.01, 0.07))}
    assert not retrieval_checks(unsure, None, s)[0].passed
    hurts_unseen = {**better, "unseen": _view(80, 0.5, 0.45, (-0.09, -0.01))}
    assert not retrieval_checks(hurts_unseen, None, s)[1].passed
    worse_pairs = {"incumbent": {"error_rate": 0.10}, "candidate": {"error_rate": 0.15}}
    assert not retrieval_checks(better, worse_pairs, s)[-1].passed


def test_the_gate_leads_with_next_traffic_only_when_it_has_enough_searches() -> None:
    s = Settings(min_heldout_queries=30)
    views = {"next_traffic": _view(29, 0.6, 0.7, (0.05, 0.15)), "unseen": _view(80, 0.5, 0.6, (0.05, 0.15))}
    assert lead_view(views, s) == "unseen"
    assert lead_view({**views, "next_traffic": _view(30, 0.6, 0.7, (0.05, 0.15))}, s) == "next_traffic"
    assert lead_view(views, Settings(gate_view="next_traffic")) == "next_traffic"
    few = retrieval_checks({"next_traffic": None, "unseen": _view(10, 0.5, 0.9, (0.3, 0.5))}, None, s)
    assert [c.name for c in few] == ["enough_heldout_data"] and not few[0].passed


def test_the_seed_setting_still_leads_with_the_pair_error() -> None:
    pair = {"incumbent": {"error_rate": 0.20}, "candidate": {"error_rate": 0.15}, "delta_ci95": [-0.08, -0.02]}
    views = {"unseen": _view(80, 0.5, 0.5, (-0.01, 0.01)), "next_traffic": None}
    names = [c.name for c in gate_checks(pair, 500, views, Settings(gate_metric="pair_error"))]
    assert names == ["error_rate_improvement", "improvement_significant", "ndcg_guard"]


def test_the_gate_reads_the_judged_ranking_by_default() -> None:
    corpus_says_worse = _view(200, 0.60, 0.55, (-0.08, -0.02))
    judged_says_better = _view(200, 0.60, 0.66, (0.03, 0.09))
    views = {"next_traffic": {**corpus_says_worse, "judged": judged_says_better}, "unseen": None}
    checks = retrieval_checks(views, None, Settings())
    assert checks[0].passed and "judged results" in checks[0].detail
    assert not retrieval_checks(views, None, Settings(gate_ranking="corpus"))[0].passed
