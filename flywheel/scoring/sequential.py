"""Always-valid sequential tests: look at the data after every search and stop as soon as it is clear, with the
error rate still bounded by alpha (Ville's inequality on a mixture likelihood ratio; Robbins 1970, Johari et al.
2017 "Peeking at A/B tests").

- `win_share_test`: the interleaving test. Among lists with a winner, is the challenger's win share p = 0.5?
  The evidence is a Beta(a, a)-mixture likelihood ratio against p = 0.5; its inverse is a confidence sequence
  for p, valid at every n at once.
- `mean_difference_test`: the user-split A/B baseline: a normal-mixture SPRT on the difference of two means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from scipy.optimize import brentq
from scipy.special import betaln

# Beta(a, a) mixing prior on the win share: a = 12 puts its standard deviation at 0.1, i.e. it expects effects
# of the size interleaving experiments report (win shares of 0.4-0.6), and still detects larger ones fast.
PRIOR_A = 12.0


@dataclass(frozen=True)
class Verdict:
    """A sequential test's state: the evidence, the confidence band, and whether it may stop."""

    decision: str | None  # "challenger" (better), "incumbent" (the challenger is worse) or None (go on)
    log_evidence: float  # log of the mixture likelihood ratio against "no difference"
    estimate: float | None  # the point estimate (win share; mean difference)
    low: float | None  # the always-valid confidence band at 1 - alpha
    high: float | None


def _log_marginal(wins: int, losses: int, a: float) -> float:
    """log of the Beta(a, a) mixture's probability of the observed sequence."""
    return float(betaln(a + wins, a + losses) - betaln(a, a))


def win_share_test(wins: int, losses: int, alpha: float = 0.05, a: float = PRIOR_A) -> Verdict:
    """Test whether the challenger wins more (or fewer) interleaved lists than it loses.

    Valid under continuous monitoring: the chance that this ever says "challenger" (or "incumbent") when the
    two rankers are equally good is at most alpha, however often it is called.

    Args:
        wins: lists where the challenger's results earned more credit.
        losses: lists where the incumbent's did.
        alpha: the error rate.
        a: the mixing prior's parameter (see PRIOR_A).

    Returns:
        The Verdict; its band is the set of win shares the data do not rule out.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1); got {alpha}")
    n = wins + losses
    marginal = _log_marginal(wins, losses, a)
    log_evidence = marginal + n * math.log(2)
    if n == 0:
        return Verdict(None, 0.0, None, 0.0, 1.0)
    estimate = wins / n
    threshold = marginal + math.log(alpha)  # p is in the band while wins*log p + losses*log(1-p) > this

    def excess(p: float) -> float:
        return wins * math.log(p) + losses * math.log1p(-p) - threshold

    eps = 1e-12
    low = 0.0 if wins == 0 else brentq(excess, eps, max(estimate, 2 * eps) if losses else 1 - eps, xtol=1e-9)
    high = 1.0 if losses == 0 else brentq(excess, min(estimate, 1 - 2 * eps) if wins else eps, 1 - eps, xtol=1e-9)
    decision = None
    if log_evidence >= math.log(1 / alpha):
        decision = "challenger" if wins > losses else "incumbent"
    return Verdict(decision, log_evidence, estimate, low, high)


def mean_difference_test(
    mean_a: float, mean_b: float, variance: float, n_a: int, n_b: int, tau: float, alpha: float = 0.05
) -> Verdict:
    """The normal-mixture SPRT on mean_b - mean_a (Johari et al. 2017), the A/B baseline of the bench.

    Args:
        mean_a: the control arm's mean so far.
        mean_b: the treatment arm's mean so far.
        variance: the per-observation variance (pooled).
        n_a: the control arm's observations.
        n_b: the treatment arm's.
        tau: the standard deviation of the mixing prior on the difference (the effect size one expects).
        alpha: the error rate.

    Returns:
        The Verdict ("challenger": b is better), with an always-valid band on the difference.
    """
    if n_a == 0 or n_b == 0 or variance <= 0:
        return Verdict(None, 0.0, None, None, None)
    v = variance * (1 / n_a + 1 / n_b)  # the variance of the difference
    delta = mean_b - mean_a
    t2 = tau * tau
    log_evidence = 0.5 * math.log(v / (v + t2)) + t2 * delta * delta / (2 * v * (v + t2))
    # Inverting the same mixture gives the band: |delta - d| <= half.
    half = math.sqrt(v * (v + t2) / t2 * (math.log((v + t2) / v) - 2 * math.log(alpha)))
    decision = None
    if log_evidence >= math.log(1 / alpha):
        decision = "challenger" if delta > 0 else "incumbent"
    return Verdict(decision, log_evidence, delta, delta - half, delta + half)


__all__ = ["PRIOR_A", "Verdict", "mean_difference_test", "win_share_test"]
