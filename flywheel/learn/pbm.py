"""The numerics of the position-based click model: rows as arrays, identification, EM with SQUAREM.

The public side (the curve, its use as weights, the documented choices) is `flywheel.learn.propensity`;
this module only turns logged rows into integer arrays and fits P(click) = theta_rank * gamma_pair on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from flywheel.errors import InvalidInput

# A probability of exactly 0 or 1 makes a non-click's posterior 0/0; EM never needs the last digit.
EPS = 1e-6


@dataclass
class ClickLogs:
    """Rows as integer arrays: the shape the EM works on."""

    search: np.ndarray  # search index per row
    query: np.ndarray  # query index per row (the bootstrap's unit)
    pair: np.ndarray  # query-document pair index per row
    rank: np.ndarray  # 0-based rank per row
    click: np.ndarray  # 0.0 / 1.0
    identifying: np.ndarray  # the row's pair is shown at >= 2 ranks and at least min_impressions times
    seen: np.ndarray  # 1.0 if the row is an observation (cascade: not below the search's lowest click)


def encode_rows(
    rows: Iterable[Sequence[Any]], max_rank: int, all_searches: bool, min_impressions: int, cascade: bool
) -> ClickLogs:
    """Turn keys into dense indices, drop ranks beyond max_rank (and unclicked searches unless all_searches)."""
    searches: dict[Any, int] = {}
    queries: dict[Any, int] = {}
    pairs: dict[tuple[Any, Any], int] = {}
    s, q, p, r, c = [], [], [], [], []
    for search_id, query, doc_id, rank, clicked in rows:
        rank = int(rank)
        if rank < 1:
            raise InvalidInput(f"ranks are 1-based, got {rank} in search {search_id!r}")
        if rank > max_rank:
            continue
        s.append(searches.setdefault(search_id, len(searches)))
        q.append(queries.setdefault(query, len(queries)))
        p.append(pairs.setdefault((query, doc_id), len(pairs)))
        r.append(rank - 1)
        c.append(1.0 if clicked else 0.0)
    if not r:
        raise InvalidInput(f"no shown results at ranks 1..{max_rank}: nothing to estimate position bias from")
    search, click = np.asarray(s), np.asarray(c)
    if not all_searches:
        # The truncation correction is exact only if every kept search has a click within max_rank.
        keep = (np.bincount(search, weights=click) > 0)[search]
        s, q, p, r, c = [np.asarray(x)[keep] for x in (s, q, p, r, c)]
    else:
        s, q, p, r, c = (np.asarray(x) for x in (s, q, p, r, c))
    if len(c) == 0 or c.sum() == 0:
        raise InvalidInput("no clicks in the rows: position bias cannot be estimated (use unweighted clicks)")
    s, q, p = (np.unique(x, return_inverse=True)[1] for x in (s, q, p))
    seen = np.ones(len(r), dtype=bool)
    if cascade:
        # Below the lowest click the user had stopped reading; a search without a click was read to the end.
        lowest = np.full(int(s.max()) + 1, -1)
        np.maximum.at(lowest, s[c > 0], r[c > 0])
        lowest[lowest < 0] = max_rank
        seen = r <= lowest[s]
    # By exposure (every shown row), never by which rows a click made "seen": that would select on outcomes.
    # And all the pair's rows, seen or not: in a clicked-only log the unseen ones still stand for the unseen
    # no-click searches (read to the end), and leaving those out of theta's update biases it up.
    ranks_per_pair = np.bincount(np.unique(p * max_rank + r) // max_rank)
    identifying = (ranks_per_pair[p] >= 2) & (np.bincount(p)[p] >= min_impressions)
    return ClickLogs(s, q, p, r.astype(np.int64), c.astype(float), identifying, seen.astype(float))


def identified_ranks(logs: ClickLogs, max_rank: int) -> np.ndarray:
    """Ranks linked to rank 1 through pairs with a click shown at both; raise if no rank besides 1 is.

    A pair never clicked has gamma = 0 at the optimum and says nothing about theta, so it links nothing.
    """
    clicked_pair = np.bincount(logs.pair, weights=logs.click) > 0
    use = logs.identifying & clicked_pair[logs.pair] & (logs.seen > 0)
    n_pairs = int(logs.pair.max()) + 1
    # Bipartite graph: nodes 0..max_rank-1 are ranks, the rest pairs.
    graph = coo_matrix(
        (np.ones(int(use.sum())), (logs.rank[use], max_rank + logs.pair[use])),
        shape=(max_rank + n_pairs, max_rank + n_pairs),
    )
    _, label = connected_components(graph, directed=False)
    observed = label[:max_rank] == label[0]
    observed &= np.bincount(logs.rank[use], minlength=max_rank) > 0
    if not observed[0] or observed.sum() < 2:
        raise InvalidInput(
            "no clicked query-document pair was shown at two different ranks (often enough: min_impressions): the "
            "logs do not separate position from relevance (randomise a share of searches, e.g. adjacent swaps, "
            "wait for the ranking to change, or lower min_impressions)"
        )
    return observed


def fit_pbm(
    logs: ClickLogs,
    max_rank: int,
    multiplicity: np.ndarray | None,
    start: tuple[np.ndarray, np.ndarray] | None,
    max_iter: int,
    tol: float,
    all_searches: bool,
) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """EM for P(click) = theta_rank * gamma_pair, SQUAREM-accelerated; returns (theta / theta_1, gamma, steps, ok).

    Plain EM converges linearly and slowly here (thousands of steps to 1e-8 on 10k searches); SQUAREM
    (Varadhan and Roland, 2008) extrapolates along two EM steps and keeps the result only if the likelihood
    did not fall, so it keeps EM's monotone ascent at a fraction of the steps.
    """
    # No np.dot on row vectors: it goes to the threaded BLAS, and two such dots per step made this loop
    # 3-4x slower on a busy 2-core machine (elementwise sums stay on one thread).
    m = np.ones(len(logs.rank)) if multiplicity is None else multiplicity
    n_pairs = int(logs.pair.max()) + 1
    n_searches = int(logs.search.max()) + 1
    ident = m * logs.identifying
    noclick = (1.0 - logs.click) * logs.seen  # a row below a cascade's last click is no observation
    clicked = np.flatnonzero(logs.click)
    m_click, m_noclick = m[clicked], m * noclick
    # A search's multiplicity (the bootstrap's weight; the same on all its rows).
    per_search = np.bincount(logs.search, weights=m, minlength=n_searches) / np.bincount(logs.search)

    def step(x: np.ndarray) -> tuple[np.ndarray, float]:
        """One EM update of x = (theta, gamma), and the log-likelihood at x."""
        theta, gamma = x[:max_rank], x[max_rank:]
        t, g = theta[logs.rank], gamma[logs.pair]
        tg = t * g
        log_miss = np.log1p(-tg)
        loglik = float(np.sum(m_click * np.log(tg[clicked])) + np.sum(m_noclick * log_miss))
        ghosts: np.ndarray | float = 0.0
        if not all_searches:
            # Each kept search stands for p0 / (1 - p0) unseen no-click searches like it (EM for truncation).
            # Over every shown row: a search without a click was read to the end, in a cascade too.
            p0 = np.exp(np.bincount(logs.search, weights=log_miss, minlength=n_searches))
            loglik -= float(np.sum(per_search * np.log(np.maximum(1.0 - p0, EPS))))
            ghosts = (p0 / np.maximum(1.0 - p0, EPS))[logs.search]
        # Posteriors of a miss: examined but not relevant, or relevant but not examined.
        share = (noclick + ghosts) / (1.0 - tg)
        examined = logs.click + share * (t - tg)
        relevant = logs.click + share * (g - tg)
        total = logs.seen + ghosts
        new_theta = np.bincount(logs.rank, weights=ident * examined, minlength=max_rank)
        new_theta /= np.maximum(np.bincount(logs.rank, weights=ident * total, minlength=max_rank), 1e-12)
        # Ranks without identifying rows keep their value (the carry overwrites them afterwards).
        new_theta = np.where(new_theta > 0, new_theta, theta)
        new_gamma = np.bincount(logs.pair, weights=m * relevant, minlength=n_pairs)
        new_gamma /= np.maximum(np.bincount(logs.pair, weights=m * total, minlength=n_pairs), 1e-12)
        return np.clip(np.concatenate([new_theta, new_gamma]), EPS, 1 - EPS), loglik

    if start is None:
        # Start from the raw click-through rate per rank (right in the ranks users click most), gamma at 1/2.
        ctr = np.bincount(logs.rank, weights=m * logs.click, minlength=max_rank)
        ctr /= np.maximum(np.bincount(logs.rank, weights=m, minlength=max_rank), 1e-12)
        x = np.concatenate([np.clip(ctr / max(ctr.max(), EPS), 0.05, 1.0), np.full(n_pairs, 0.5)])
    else:
        x = np.concatenate(start)
    converged, steps = False, 0
    while steps < max_iter:  # steps counts EM updates, three per SQUAREM cycle
        x1, loglik = step(x)
        x2, _ = step(x1)
        r, v = x1 - x, x2 - 2 * x1 + x
        alpha = -np.sqrt(np.sum(r * r) / max(float(np.sum(v * v)), 1e-300))
        alpha = min(alpha, -1.0)  # -1 is plain EM's x2
        x_new = np.clip(x - 2 * alpha * r + alpha**2 * v, EPS, 1 - EPS)
        x_new, loglik_new = step(x_new)
        steps += 3
        if not np.isfinite(loglik_new) or loglik_new < loglik:
            x_new = x2  # the extrapolation overshot: keep the two plain steps
        # Convergence on the normalised curve: theta and gamma trade a common scale freely, theta / theta_1 not.
        moved = np.max(np.abs(x_new[:max_rank] / x_new[0] - x[:max_rank] / x[0]))
        x = x_new
        if moved < tol:
            converged = True
            break
    theta, gamma = x[:max_rank], x[max_rank:]
    # Normalise theta_1 to 1 and give gamma the scale, so theta * gamma (the fit) is unchanged.
    return theta / theta[0], gamma * theta[0], steps, converged


def non_increasing(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least-squares projection onto non-increasing sequences (pool adjacent violators)."""
    blocks: list[list[float]] = []  # [mean, weight, length]
    for v, w in zip(values, weights, strict=True):
        blocks.append([float(v), float(w), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            v2, w2, n2 = blocks.pop()
            v1, w1, n1 = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    return np.concatenate([np.full(int(n), v) for v, _, n in blocks])
