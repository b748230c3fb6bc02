"""Position bias from the logs: a click model fitted by EM, and inverse-propensity weights for training.

A click is evidence of relevance only after correcting for how often its rank is looked at: rank 1 is read
by nearly everyone, rank 8 by few, so raw clicks teach a model to keep whatever it already ranks first. The
position-based model (PBM) says P(click | q, d, rank r) = theta_r * gamma_qd: theta_r the chance rank r is
examined, gamma_qd the chance a user who examines d finds it relevant. `estimate_propensities` fits it by EM
(Wang et al., WSDM 2018; plain EM, one gamma per query-document pair) and reports theta relative to rank 1.

How it is meant to be used (the cycle's mining step):

    rows = [ShownResult(search_id, query_key, doc_id, rank, clicked), ...]  # every shown result
    curve = estimate_propensities(rows, max_rank=10)        # once per cycle; curve.to_dict() into the report
    w = search_weights(search_ids, ranks, clicked, curve)   # per row: clicks 1/theta, skip-above negatives
                                                            # the weight of their clicks, other rows 0
    w_click = ips_weights(click_ranks, curve, clip=10.0)    # or the clicks alone

Rows: one per result shown in a logged search (the `impressions` table joined to its clicks), the query key
being what mining groups by (normalised query text). By default the rows are those of searches with at least
one click (what a client that reports feedback leaves behind: a search without feedback cannot be told apart
from one whose client never reports) and the fit corrects for that selection; pass `all_searches=True` when
the rows are every logged search, clicked or not.

Identification: PBM separates theta from gamma only through query-document pairs shown at different ranks
in different searches (a ranker that changes between cycles, new documents, or a share of randomised
searches). A pair seen at one rank only carries no information about theta (its gamma absorbs any value),
and one seen only a few times fits its own clicks and drags theta towards a flat curve, so both are fitted
but left out of theta's update (`min_impressions`). A rank that no clicked pair links to rank 1 has no
estimate: it carries the value of the rank above (`observed` says which ranks were estimated); carrying
rather than extrapolating keeps the weights of deep clicks conservative. `monotone=True` also forces a
non-increasing curve.

When the logs come from searches with adjacent pairs swapped at random, `swap_propensities` estimates the
same curve without a click model (a randomised intervention; Joachims et al., WSDM 2017; the harvested form
of Agarwal et al., WSDM 2019 needs several logged rankers, which the loop does not keep).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.learn.pbm import encode_rows, fit_pbm, identified_ranks, non_increasing

DEFAULT_CLIP = 10.0


class ShownResult(NamedTuple):
    """One result shown in a logged search: which search, query key, document, 1-based rank, clicked or not."""

    search_id: str
    query: str
    doc_id: str
    rank: int
    clicked: int


@dataclass(frozen=True)
class PropensityCurve:
    """Examination propensity per rank, relative to rank 1, and how the estimate was obtained.

    Attributes:
        theta: theta[r - 1] for ranks 1..max_rank; theta[0] == 1.
        observed: which ranks were estimated from data (the others carry the value of the rank above).
        ci_low, ci_high: 95% percentile bootstrap interval per rank (over queries), or None when not computed.
        searches, rows, clicks: what the fit used (after dropping ranks beyond max_rank).
        pairs: query-document pairs that identify theta (shown at two or more ranks, often enough).
        impressions_per_pair: the median impressions of those pairs; below ~10 the estimate is biased towards
            a flat curve (see `estimate_propensities`). 0 for "swap".
        iterations, converged: EM's iterations and whether the tolerance was met before max_iter.
        method: "em" (click model) or "swap" (randomised adjacent swaps).
    """

    theta: np.ndarray
    observed: np.ndarray
    ci_low: np.ndarray | None
    ci_high: np.ndarray | None
    searches: int
    rows: int
    clicks: int
    pairs: int
    impressions_per_pair: float
    iterations: int
    converged: bool
    method: str = "em"

    @property
    def max_rank(self) -> int:
        """The deepest rank with a value; deeper ranks use it."""
        return len(self.theta)

    def at(self, ranks: Sequence[int] | np.ndarray) -> np.ndarray:
        """Propensities of 1-based ranks; ranks beyond max_rank carry the last value (the same choice as gaps).

        Args:
            ranks: 1-based ranks.

        Returns:
            theta per rank, as floats.
        """
        r = np.asarray(ranks, dtype=np.int64)
        if r.size and r.min() < 1:
            raise InvalidInput(f"ranks are 1-based, got {int(r.min())}")
        return self.theta[np.minimum(r, self.max_rank) - 1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the cycle report (the curve the report shows)."""
        out: dict[str, Any] = {
            "method": self.method,
            "theta": [round(float(t), 4) for t in self.theta],
            "observed": [bool(o) for o in self.observed],
            "searches": self.searches,
            "rows": self.rows,
            "clicks": self.clicks,
            "pairs": self.pairs,
            "impressions_per_pair": self.impressions_per_pair,
            "iterations": self.iterations,
            "converged": self.converged,
        }
        if self.ci_low is not None and self.ci_high is not None:
            out["ci"] = [
                [round(float(lo), 4), round(float(hi), 4)] for lo, hi in zip(self.ci_low, self.ci_high, strict=True)
            ]
        return out


def estimate_propensities(
    rows: Iterable[Sequence[Any]],
    max_rank: int = 10,
    *,
    all_searches: bool = False,
    min_impressions: int = 8,
    cascade: bool = False,
    monotone: bool = False,
    max_iter: int = 3000,
    tol: float = 1e-6,
    bootstrap: int = 0,
    seed: int = 0,
) -> PropensityCurve:
    """Fit the position-based click model by EM and return theta per rank, normalised so theta_1 = 1.

    Args:
        rows: (search_id, query key, doc_id, rank, clicked) per shown result; `ShownResult` or any 5-sequence.
        max_rank: ranks 1..max_rank are estimated; deeper rows are dropped.
        all_searches: False (default): the rows are the searches with at least one click, and the fit
            corrects for that selection (EM for truncated samples: each kept search stands for p0/(1-p0)
            unseen searches without a click, p0 its no-click probability); searches without a click in
            `rows` are dropped. True: the rows are every logged search, fitted as they are.
        min_impressions: a pair updates theta only if shown this often. With one gamma per pair, a pair seen a
            few times fits its clicks exactly (gamma at 1) and pushes theta towards a flat curve: on synthetic
            logs with ~5 impressions per pair the max error (at rank 2, too high) was 0.08-0.19 with 1 and
            0.04-0.09 with 8; at ~17 per pair both gave 0.01-0.02. The pair's rows still fit its gamma.
        cascade: rows below a search's lowest click are not observations (the user stopped reading there),
            as in the cascade and dependent click models: users who stop at the first answer, such as
            `flywheel.lab.simulate`'s. There, the PBM on every row mistakes "stopped after a click" for
            position bias: with a true 0.85^(r-1) it estimated theta_2 = 0.16 from clicked searches, 0.32
            from all (cascade=True: 0.87-0.89).
            Deep ranks are rarely read in a cascade, so it needs more data: with every search (all_searches)
            max error 0.05-0.10 at 10k searches; from clicked searches alone 0.15-0.19 at 10k and 0.03-0.16
            at 20k, since the unseen no-click searches then hinge on poorly known gammas
            (bench/propensity_recovery.py).
        monotone: project the curve onto non-increasing values (pool-adjacent-violators, weighted by rows).
        max_iter: EM updates at most.
        tol: stop when no normalised theta moves by more than this in one (accelerated) step.
        bootstrap: resamples of queries for a 95% percentile interval per rank (0: none), each warm-started
            from the fit. It shows sampling noise only, not the bias above: on synthetic logs with 5k-10k
            searches it covered the true value at 55-100% of the ranks, not 95%.
        seed: seed of the bootstrap (the fit itself is deterministic).

    Returns:
        The curve, with counts, iterations and whether EM converged.

    Raises:
        InvalidInput: no rows, a rank below 1, no clicks, or no clicked pair shown at two ranks at least
            min_impressions times (position and relevance are not identified).
    """
    if max_rank < 1:
        raise InvalidInput(f"max_rank must be at least 1, got {max_rank}")
    logs = encode_rows(rows, max_rank, all_searches, min_impressions, cascade)
    observed = identified_ranks(logs, max_rank)
    theta, gamma, iterations, converged = fit_pbm(logs, max_rank, None, None, max_iter, tol, all_searches)
    weights = np.bincount(logs.rank[logs.identifying], minlength=max_rank).astype(float)
    curve = _finish(theta, observed, weights, monotone)
    ci_low = ci_high = None
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        n_queries = int(logs.query.max()) + 1
        draws = np.empty((bootstrap, max_rank))
        # A looser tolerance per resample: 1e-4 moves theta by ~1e-3, far inside the interval's width.
        boot_tol = max(tol, 1e-4)
        for b in range(bootstrap):
            multiplicity = np.bincount(rng.integers(0, n_queries, n_queries), minlength=n_queries).astype(float)
            t, _, _, _ = fit_pbm(
                logs, max_rank, multiplicity[logs.query], (theta, gamma), max_iter, boot_tol, all_searches
            )
            draws[b] = _finish(t, observed, weights, monotone)
        ci_low, ci_high = np.percentile(draws, [2.5, 97.5], axis=0)
    return PropensityCurve(
        theta=curve,
        observed=observed,
        ci_low=ci_low,
        ci_high=ci_high,
        searches=int(logs.search.max()) + 1,
        rows=len(logs.rank),
        clicks=int(logs.click.sum()),
        pairs=int(np.unique(logs.pair[logs.identifying]).size),
        impressions_per_pair=float(np.median(np.bincount(logs.pair)[np.unique(logs.pair[logs.identifying])])),
        iterations=iterations,
        converged=converged,
    )


def _finish(theta: np.ndarray, observed: np.ndarray, weights: np.ndarray, monotone: bool) -> np.ndarray:
    """Carry the rank above into unestimated ranks, then optionally make the curve non-increasing."""
    out = theta.astype(float).copy()
    for r in range(1, len(out)):
        if not observed[r]:
            out[r] = out[r - 1]
    if monotone:
        out = non_increasing(out, np.where(observed, np.maximum(weights, 1.0), 1e-9))
    return out / out[0]


def ips_weights(ranks: Sequence[int] | np.ndarray, curve: PropensityCurve, clip: float = DEFAULT_CLIP) -> np.ndarray:
    """Inverse-propensity weights of clicks: 1 / theta_rank, at most `clip`.

    Dividing a click by the chance its rank was read makes the expected weighted clicks of a document
    proportional to its relevance, whatever rank it was shown at. Deep ranks have small theta, so a few lucky
    clicks there would dominate training: clipping caps the weight, trading a little bias (deep clicks stay
    under-counted by theta_r * clip when theta_r < 1 / clip) for a bounded variance. The default 10 leaves
    ranks with theta >= 0.1 unbiased.

    Args:
        ranks: 1-based ranks of the clicks.
        curve: from `estimate_propensities` (or `swap_propensities`).
        clip: the largest weight (>= 1).

    Returns:
        Float weights, one per rank.
    """
    if clip < 1.0:
        raise InvalidInput(f"clip must be at least 1 (rank 1 has weight 1), got {clip}")
    theta = curve.at(ranks)
    return np.minimum(1.0 / np.maximum(theta, 1.0 / clip), clip)


def search_weights(
    search_ids: Sequence[Any] | np.ndarray,
    ranks: Sequence[int] | np.ndarray,
    clicked: Sequence[int] | np.ndarray,
    curve: PropensityCurve,
    clip: float = DEFAULT_CLIP,
) -> np.ndarray:
    """Weights of the rows mining turns into examples: clicks and the skip-above negatives of each search.

    A click gets `ips_weights`. A skip-above negative (not clicked, shown above a click of the same search)
    gets the mean weight of the clicks below it: it enters training as the negative of those clicks, and in
    the pairwise IPS estimator (Joachims et al., WSDM 2017) a (click, other result) pair is weighted by the
    click's inverse propensity, not by the other's. Dividing a skip by its own theta is not principled: in
    the PBM a non-click is not a count that examination thins in proportion to theta, and 1 / theta would
    inflate the deep skips, the ones least likely to have been read. Every other row (not clicked, below the
    lowest click) gets 0. Explicit judgements (thumbs up / down) are not subject to examination bias: give
    them weight 1 rather than these.

    Args:
        search_ids: the search of each row (any hashable ids; rows of a search need not be adjacent).
        ranks: 1-based rank of each row.
        clicked: 1 if the row was clicked.
        curve: the estimated curve.
        clip: the largest weight, as in `ips_weights`.

    Returns:
        One float weight per row, in the input order.
    """
    ranks = np.asarray(ranks, dtype=np.int64)
    clicks = np.asarray(clicked).astype(bool)
    search = np.unique(np.asarray(search_ids, dtype=object), return_inverse=True)[1].ravel()
    if not len(ranks) == len(clicks) == len(search):
        raise InvalidInput("search_ids, ranks and clicked must have one entry per row")
    weights = np.where(clicks, ips_weights(ranks, curve, clip) if len(ranks) else 0.0, 0.0)
    # Per search, from the deepest rank up: the clicks strictly below each row (sum of weights and count).
    order = np.lexsort((-ranks, search))
    s, w, c = search[order], weights[order], clicks[order].astype(float)
    start = np.r_[True, s[1:] != s[:-1]]
    group_start = np.maximum.accumulate(np.where(start, np.arange(len(s)), 0))
    cw, cc = np.cumsum(w) - w, np.cumsum(c) - c  # exclusive cumulative sums
    below_w = cw - (cw[group_start] if len(s) else 0.0)
    below_c = cc - (cc[group_start] if len(s) else 0.0)
    sorted_out = np.where(c > 0, w, np.where(below_c > 0, below_w / np.maximum(below_c, 1.0), 0.0))
    out = np.empty(len(s))
    out[order] = sorted_out
    return out


def swap_propensities(rows: Iterable[Sequence[Any]], max_rank: int = 10) -> PropensityCurve:
    """Relative propensities theta_{r+1} / theta_r from searches whose adjacent results were swapped at random.

    For each r, the results the ranker put at r and r+1 are seen in both orders; because the swap is random,
    the same documents (same relevance on average) are shown at both ranks, so the ratio of their click rates
    at r+1 and at r is theta_{r+1} / theta_r without any model of relevance. The ratios are chained from
    rank 1 (so their errors compound down the list). Pass every search of the randomised share, clicked or
    not: a swap changes the chance of any click, so selecting clicked searches would bias the ratio.

    Args:
        rows: (search_id, logged rank, shown rank, clicked) per shown result; the logged rank is where the
            ranker put the document, the shown rank where the user saw it (equal when not swapped).
        max_rank: ranks 1..max_rank.

    Returns:
        A curve with method "swap". Where a pair (r, r+1) was never swapped (or never clicked at r) the chain
        breaks: rank r+1 and every rank below it carry theta_r (`observed` False). `pairs` counts the rows
        shown away from their logged rank.
    """
    searches: set[Any] = set()
    n = np.zeros((max_rank, max_rank))  # [logged rank, shown rank], 0-based
    clicks = np.zeros_like(n)
    for search_id, logged, shown, clicked in rows:
        logged, shown = int(logged) - 1, int(shown) - 1
        if logged < 0 or shown < 0:
            raise InvalidInput(f"ranks are 1-based, got logged {logged + 1}, shown {shown + 1}")
        if logged < max_rank and shown < max_rank:
            searches.add(search_id)
            n[logged, shown] += 1
            clicks[logged, shown] += 1.0 if clicked else 0.0
    if clicks.sum() == 0:
        raise InvalidInput("no clicks in the rows: position bias cannot be estimated (use unweighted clicks)")
    ctr = np.divide(clicks, n, out=np.zeros_like(n), where=n > 0)
    theta, observed = np.ones(max_rank), np.zeros(max_rank, dtype=bool)
    observed[0] = True
    for r in range(max_rank - 1):
        cells = [(r, r), (r, r + 1), (r + 1, r + 1), (r + 1, r)]
        upper = ctr[r, r] + ctr[r + 1, r]  # both documents at rank r
        lower = ctr[r, r + 1] + ctr[r + 1, r + 1]  # both at rank r + 1
        seen = all(n[cell] > 0 for cell in cells) and upper > 0
        observed[r + 1] = seen and observed[r]
        theta[r + 1] = theta[r] * (lower / upper if observed[r + 1] else 1.0)
    return PropensityCurve(
        theta=theta,
        observed=observed,
        ci_low=None,
        ci_high=None,
        searches=len(searches),
        rows=int(n.sum()),
        clicks=int(clicks.sum()),
        pairs=int(n.sum() - np.trace(n)),
        impressions_per_pair=0.0,
        iterations=0,
        converged=True,
        method="swap",
    )
