"""The promotion gate: each check passes or fails on its numbers, and the reasons say why."""

from __future__ import annotations

from flywheel.config import Settings
from flywheel.cycle.gate import budget_check, decide, error_checks, golden_check, retrieval_check


def _pair(inc: float, cand: float, ci: tuple[float, float]) -> dict:
    return {"incumbent": {"error_rate": inc}, "candidate": {"error_rate": cand}, "delta_ci95": list(ci)}


def _retrieval(inc: float, cand: float) -> dict:
    return {
        "incumbent": {"ndcg@10": inc},
        "candidate": {"ndcg@10": cand},
        "delta": {"ndcg@10": {"mean": cand - inc, "ci95": [cand - inc - 0.01, cand - inc + 0.01]}},
    }


def test_promotes_when_every_check_passes() -> None:
    s = Settings()
    decision = decide(
        [
            *error_checks(_pair(0.22, 0.18, (-0.05, -0.03)), 500, s),
            retrieval_check(_retrieval(0.6, 0.62), s),
            budget_check(60, s),
        ]
    )
    assert decision.promote
    assert any("18.0%" in r for r in decision.reasons)


def test_rejects_small_or_insignificant_gain() -> None:
    s = Settings(min_improvement=0.01)
    small = decide(error_checks(_pair(0.22, 0.215, (-0.01, 0.0)), 500, s))
    assert not small.promote
    assert len(small.reasons) == 2  # too small and CI not below zero
    loose = Settings(min_improvement=0.0, require_significant=False)
    assert decide(error_checks(_pair(0.22, 0.215, (-0.01, 0.01)), 500, loose)).promote


def test_relative_improvement_threshold() -> None:
    s = Settings(min_improvement=0.0, min_relative_improvement=0.25, require_significant=False)
    assert not decide(error_checks(_pair(0.20, 0.16, (-0.05, -0.03)), 500, s)).promote  # 20% avoided
    assert decide(error_checks(_pair(0.20, 0.14, (-0.07, -0.05)), 500, s)).promote  # 30% avoided


def test_guards_ndcg_golden_budget_and_data() -> None:
    s = Settings(max_ndcg_drop=0.01, max_cycle_minutes=1)
    assert not retrieval_check(_retrieval(0.60, 0.58), s).passed
    assert retrieval_check(_retrieval(0.60, 0.595), s).passed
    assert not golden_check(_pair(0.10, 0.12, (0.01, 0.03)), s).passed
    assert golden_check(None, s) is None
    assert not budget_check(61, s).passed
    few = error_checks(_pair(0.2, 0.1, (-0.2, -0.1)), 3, s)
    assert [c.name for c in few] == ["enough_heldout_data"] and not few[0].passed
    assert not decide([]).promote
