"""The always-valid stop rules: false decisions bounded by alpha under continuous peeking, and power."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import betaln

from flywheel.scoring.sequential import PRIOR_A, mean_difference_test, win_share_test

ALPHA = 0.05


def _first_decision(outcomes: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """For each experiment (a row of 1 = win, 0 = loss), +1 / -1 for the first decision when peeking after
    every list, 0 when undecided at the end (vectorised form of win_share_test, checked against it below)."""
    wins = np.cumsum(outcomes, axis=1)
    n = np.arange(1, outcomes.shape[1] + 1)
    losses = n - wins
    log_evidence = betaln(PRIOR_A + wins, PRIOR_A + losses) - betaln(PRIOR_A, PRIOR_A) + n * math.log(2)
    stop = log_evidence >= math.log(1 / alpha)
    first = np.where(stop.any(axis=1), stop.argmax(axis=1), -1)
    rows = np.arange(len(outcomes))
    sign = np.sign(wins[rows, first] - losses[rows, first])
    return np.where(first >= 0, sign, 0)


def test_vectorised_form_matches_the_test() -> None:
    rng = np.random.default_rng(1)
    outcomes = (rng.random((5, 400)) < 0.65).astype(int)
    decisions = _first_decision(outcomes)
    for row, decision in zip(outcomes, decisions, strict=True):
        verdicts = [win_share_test(int(row[:n].sum()), n - int(row[:n].sum())).decision for n in range(1, 401)]
        first = next((v for v in verdicts if v), None)
        assert {"challenger": 1, "incumbent": -1, None: 0}[first] == decision


def test_identical_rankers_are_falsely_promoted_at_most_alpha_of_the_time_however_often_one_looks() -> None:
    rng = np.random.default_rng(0)
    outcomes = (rng.random((400, 3000)) < 0.5).astype(int)  # 400 experiments, peeking after each of 3000 lists
    decisions = _first_decision(outcomes)
    assert (decisions == 1).mean() <= ALPHA
    assert (decisions != 0).mean() <= ALPHA  # either wrong direction


def test_a_better_challenger_is_promoted_and_a_worse_one_rejected() -> None:
    rng = np.random.default_rng(2)
    better = _first_decision((rng.random((100, 2000)) < 0.6).astype(int))
    worse = _first_decision((rng.random((100, 2000)) < 0.4).astype(int))
    assert (better == 1).mean() >= 0.95 and (better == -1).sum() == 0
    assert (worse == -1).mean() >= 0.95 and (worse == 1).sum() == 0


def test_the_band_excludes_one_half_exactly_when_the_test_decides() -> None:
    for wins, losses in [(0, 0), (5, 0), (30, 10), (31, 10), (60, 40), (100, 100), (10, 40), (0, 12)]:
        verdict = win_share_test(wins, losses)
        assert verdict.low <= (verdict.estimate if verdict.estimate is not None else 0.5) <= verdict.high
        outside = not verdict.low <= 0.5 <= verdict.high
        assert outside == (verdict.decision is not None), (wins, losses, verdict)
    narrow, wide = win_share_test(300, 200), win_share_test(30, 20)
    assert narrow.high - narrow.low < wide.high - wide.low  # more lists, a tighter band


def test_the_ab_baseline_keeps_alpha_on_identical_arms() -> None:
    rng = np.random.default_rng(4)
    false = 0
    for _ in range(200):
        a, b = rng.random(3000) < 0.3, rng.random(3000) < 0.3
        for n in range(50, 3001, 50):  # peeking every 50 searches per arm
            verdict = mean_difference_test(a[:n].mean(), b[:n].mean(), 0.21, n, n, tau=0.05)
            if verdict.decision:
                false += 1
                break
    assert false / 200 <= ALPHA
    assert mean_difference_test(0.3, 0.4, 0.21, 3000, 3000, tau=0.05).decision == "challenger"
