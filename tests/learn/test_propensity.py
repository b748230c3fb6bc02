"""Position-bias estimation on synthetic logs with a known curve theta_r = (1/r)^eta, and the IPS weights."""

from __future__ import annotations

import json
from functools import lru_cache

import numpy as np
import pytest

from flywheel.errors import InvalidInput
from flywheel.learn.propensity import (
    PropensityCurve,
    ShownResult,
    estimate_propensities,
    ips_weights,
    search_weights,
    swap_propensities,
)

K = 10
# Searches generated per synthetic log (before keeping the clicked ones): enough for max |error| <= 0.05 on
# ranks 1..10; over seeds 0..5 the EM error at this size was at most 0.02 for eta 0.5 and 1.0.
N_SEARCHES = 10_000
TOLERANCE = 0.05


def true_curve(eta: float) -> np.ndarray:
    return (1.0 / np.arange(1, K + 1)) ** eta


def shown_rows(query: np.ndarray, order: np.ndarray, clicks: np.ndarray) -> list[ShownResult]:
    """Rows of searches s0, s1, ...: query[s] searched, order[s] shown top-down, clicks[s] clicked."""
    queries, docs, clicked = query.tolist(), order.tolist(), clicks.astype(int).tolist()
    return [
        ShownResult(f"s{s}", f"q{queries[s]}", f"d{d}", j + 1, c)
        for s in range(len(queries))
        for j, (d, c) in enumerate(zip(docs[s], clicked[s], strict=True))
    ]


@lru_cache(maxsize=8)  # shared between tests; nothing mutates the rows
def reranked_logs(
    eta: float, seed: int, n_searches: int = N_SEARCHES, n_queries: int = 300, n_docs: int = 20
) -> tuple[list[ShownResult], np.ndarray]:
    """Logs of a ranker that changes between searches: the top 10 by relevance + N(0, 0.5^2) noise each time.

    The ranker favours relevant documents (so raw click rates per rank confound position with relevance),
    and the noise moves each query-document pair across ranks from one search to the next (which is what
    identifies the click model). Returns the rows of every search and which searches got a click.
    """
    rng = np.random.default_rng(seed)
    gamma = rng.beta(0.6, 1.2, size=(n_queries, n_docs))
    query = rng.integers(0, n_queries, n_searches)
    order = np.argsort(-(gamma[query] + 0.5 * rng.standard_normal((n_searches, n_docs))), axis=1)[:, :K]
    clicks = rng.random((n_searches, K)) < true_curve(eta) * np.take_along_axis(gamma[query], order, axis=1)
    return shown_rows(query, order, clicks), clicks.any(axis=1)


def clicked_only(rows: list[ShownResult], any_click: np.ndarray) -> list[ShownResult]:
    """What a feedback log holds: the searches with at least one click."""
    return [r for r in rows if any_click[int(r.search_id[1:])]]


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_em_recovers_the_curve_from_clicked_searches(eta: float) -> None:
    rows, any_click = reranked_logs(eta, seed=1)
    logged = clicked_only(rows, any_click)
    curve = estimate_propensities(logged, max_rank=K)
    assert curve.converged and curve.method == "em"
    assert curve.theta[0] == 1.0 and curve.observed.all()
    assert np.max(np.abs(curve.theta - true_curve(eta))) <= TOLERANCE
    assert curve.searches == int(any_click.sum()) and curve.rows == len(logged)
    # The test has teeth: raw click rates per rank (position and relevance mixed) miss by far more.
    ranks = np.array([r.rank for r in logged])
    clicked = np.array([r.clicked for r in logged])
    ctr = np.bincount(ranks, weights=clicked)[1:] / np.bincount(ranks)[1:]
    naive_error = np.max(np.abs(ctr / ctr[0] - true_curve(eta)))
    assert naive_error > TOLERANCE and naive_error > 3 * np.max(np.abs(curve.theta - true_curve(eta)))


def test_truncation_correction_beats_ignoring_the_selection() -> None:
    """Searches without a click are not in the log; fitting clicked searches as if they were all is biased."""
    rows, any_click = reranked_logs(1.0, seed=1)
    logged = clicked_only(rows, any_click)
    corrected = estimate_propensities(logged, max_rank=K)
    naive = estimate_propensities(logged, max_rank=K, all_searches=True)
    truth = true_curve(1.0)
    assert np.max(np.abs(corrected.theta - truth)) < np.max(np.abs(naive.theta - truth))
    # Ignoring the selection flattens the curve: rank 2 comes out too high.
    assert naive.theta[1] > corrected.theta[1]


def test_deterministic_for_a_seed() -> None:
    rows, any_click = reranked_logs(1.0, seed=3, n_searches=2000)
    logged = clicked_only(rows, any_click)
    first = estimate_propensities(logged, max_rank=K, bootstrap=3, seed=7)
    second = estimate_propensities(logged, max_rank=K, bootstrap=3, seed=7)
    np.testing.assert_array_equal(first.theta, second.theta)
    assert first.ci_low is not None and second.ci_low is not None
    np.testing.assert_array_equal(first.ci_low, second.ci_low)


def test_bootstrap_interval() -> None:
    """Resampling queries: the interval shows sampling noise, not the model's small-sample bias.

    So it covers the truth less often than 95%: over seeds 0..4 at this size, 6-9 of the 9 estimated ranks.
    """
    rows, any_click = reranked_logs(1.0, seed=0, n_searches=5000)
    curve = estimate_propensities(clicked_only(rows, any_click), max_rank=K, bootstrap=20, seed=7)
    assert curve.ci_low is not None and curve.ci_high is not None
    assert np.all(curve.ci_low <= curve.theta + 1e-9) and np.all(curve.theta <= curve.ci_high + 1e-9)
    assert np.all(curve.ci_high[1:] - curve.ci_low[1:] > 0.005)
    inside = (curve.ci_low <= true_curve(1.0)) & (true_curve(1.0) <= curve.ci_high)
    assert inside[1:].sum() >= 6
    report = json.loads(json.dumps(curve.to_dict()))
    assert len(report["theta"]) == K and len(report["ci"]) == K and report["theta"][0] == 1.0


def test_sparse_pairs_bias_the_curve_unless_left_out_of_theta() -> None:
    """~4 impressions per pair: pairs fitted on their own clicks flatten the curve; min_impressions limits it."""
    rows, any_click = reranked_logs(1.0, seed=0, n_searches=3000)
    logged = clicked_only(rows, any_click)
    every_pair = estimate_propensities(logged, max_rank=K, min_impressions=1)
    default = estimate_propensities(logged, max_rank=K)
    assert every_pair.impressions_per_pair < 10
    error_all = np.max(np.abs(every_pair.theta - true_curve(1.0)))
    error_default = np.max(np.abs(default.theta - true_curve(1.0)))
    assert error_all > 2 * TOLERANCE and error_default < error_all / 1.5
    assert every_pair.theta[1] > true_curve(1.0)[1] + TOLERANCE  # too flat: rank 2 overestimated


def test_cascade_users_need_the_cascade_option() -> None:
    """Users read down to the first answer and stop (as the simulator's do): rows below the click are unread.

    Measured max error of cascade=True at this size, every search logged, seeds 0..4: 0.045-0.096.
    """
    rng = np.random.default_rng(0)
    n_queries, n_docs, n_searches = 300, 20, 10_000
    gamma = rng.beta(0.6, 1.2, size=(n_queries, n_docs))
    query = rng.integers(0, n_queries, n_searches)
    order = np.argsort(-(gamma[query] + 0.5 * rng.standard_normal((n_searches, n_docs))), axis=1)[:, :K]
    truth = 0.85 ** np.arange(K)
    wants = rng.random((n_searches, K)) < truth * np.take_along_axis(gamma[query], order, axis=1)
    first = np.where(wants.any(axis=1), wants.argmax(axis=1), -1)
    rows = shown_rows(query, order, np.arange(K) == first[:, None])
    as_pbm = estimate_propensities(rows, max_rank=K, all_searches=True)
    as_cascade = estimate_propensities(rows, max_rank=K, all_searches=True, cascade=True)
    assert as_pbm.theta[1] < 0.5  # 0.32: "stopped after a click" mistaken for position bias (truth 0.85)
    assert np.max(np.abs(as_cascade.theta - truth)) <= 0.1


def test_no_clicks_no_rows_and_bad_ranks_fail_clearly() -> None:
    no_clicks = [ShownResult("s1", "q", f"d{r}", r, 0) for r in range(1, 4)]
    with pytest.raises(InvalidInput, match="no clicks"):
        estimate_propensities(no_clicks, max_rank=3)
    with pytest.raises(InvalidInput, match="no clicks"):
        estimate_propensities(no_clicks, max_rank=3, all_searches=True)
    with pytest.raises(InvalidInput, match="no shown results"):
        estimate_propensities([], max_rank=3)
    with pytest.raises(InvalidInput, match="1-based"):
        estimate_propensities([ShownResult("s1", "q", "d", 0, 1)], max_rank=3)


def test_a_ranker_that_never_changes_is_not_identified() -> None:
    """Every document always at the same rank: position and relevance cannot be told apart."""
    rows = [ShownResult(f"s{s}", "q", f"d{r}", r, int(r == 1 + s % 3)) for s in range(30) for r in range(1, 6)]
    with pytest.raises(InvalidInput, match="two different ranks"):
        estimate_propensities(rows, max_rank=5)


def test_ranks_without_data_carry_the_rank_above_and_monotone_smoothing() -> None:
    rows, any_click = reranked_logs(1.0, seed=0, n_searches=3000)
    logged = clicked_only(rows, any_click)
    curve = estimate_propensities(logged, max_rank=K + 2)
    assert curve.observed[:K].all() and not curve.observed[K:].any()
    assert curve.theta[K] == curve.theta[K + 1] == curve.theta[K - 1]
    np.testing.assert_array_equal(curve.at([K + 5]), [curve.theta[K - 1]])
    smooth = estimate_propensities(logged, max_rank=K, monotone=True)
    assert np.all(np.diff(smooth.theta) <= 0) and smooth.theta[0] == 1.0
    assert np.max(np.abs(smooth.theta - true_curve(1.0))) <= 2 * TOLERANCE


def test_ips_weighted_clicks_follow_relevance_not_position() -> None:
    """One query, 20 documents whose usual rank is unrelated to their relevance; a shaky ranker reorders them.

    Raw click rates per document mostly reflect where each one is usually shown; weighted by 1 / theta of the
    estimated curve they equal the relevance (E[click / theta_r] = gamma), whatever the rank.
    """
    rng = np.random.default_rng(5)
    n_docs, n_searches = 20, 20_000
    gamma = np.linspace(0.05, 0.95, n_docs)
    usual = rng.permutation(n_docs).astype(float)  # the ranker's preference, unrelated to relevance
    order = np.argsort(usual + 4.0 * rng.standard_normal((n_searches, n_docs)), axis=1)[:, :K]
    clicks = rng.random((n_searches, K)) < true_curve(1.0) * gamma[order]
    rows = shown_rows(np.zeros(n_searches, dtype=int), order, clicks)
    curve = estimate_propensities(rows, max_rank=K, all_searches=True)
    ranks = np.tile(np.arange(1, K + 1), n_searches)
    docs, clicked = order.ravel(), clicks.ravel()  # row order of shown_rows
    shown = np.bincount(docs, minlength=n_docs)
    raw = np.bincount(docs, weights=clicked, minlength=n_docs) / shown
    weighted = np.bincount(docs, weights=clicked * ips_weights(ranks, curve, clip=20.0), minlength=n_docs) / shown
    # Documents shown often enough for a click rate: a rarely shown one is mostly at deep ranks, where each
    # click weighs ~10 and a few hundred impressions leave a standard error near 0.1.
    often = shown >= 3000
    assert often.sum() >= 12
    assert np.max(np.abs(weighted[often] - gamma[often])) <= TOLERANCE
    assert np.max(np.abs(raw[often] - gamma[often])) > 0.3
    assert np.corrcoef(weighted[often], gamma[often])[0, 1] > 0.99 > np.corrcoef(raw[often], gamma[often])[0, 1]


def test_ips_weights_clip_and_carry() -> None:
    curve = PropensityCurve(
        theta=np.array([1.0, 0.5, 0.05]),
        observed=np.ones(3, dtype=bool),
        ci_low=None,
        ci_high=None,
        searches=1,
        rows=3,
        clicks=1,
        pairs=1,
        impressions_per_pair=10.0,
        iterations=1,
        converged=True,
    )
    np.testing.assert_allclose(ips_weights([1, 2, 3, 7], curve, clip=10.0), [1.0, 2.0, 10.0, 10.0])
    np.testing.assert_allclose(ips_weights([3], curve, clip=50.0), [20.0])
    with pytest.raises(InvalidInput, match="clip"):
        ips_weights([1], curve, clip=0.5)
    with pytest.raises(InvalidInput, match="1-based"):
        ips_weights([0], curve)


def test_search_weights_give_skip_above_negatives_the_weight_of_their_clicks() -> None:
    curve = PropensityCurve(
        theta=np.array([1.0, 0.5, 0.4, 0.25, 0.2]),
        observed=np.ones(5, dtype=bool),
        ci_low=None,
        ci_high=None,
        searches=2,
        rows=10,
        clicks=3,
        pairs=1,
        impressions_per_pair=10.0,
        iterations=1,
        converged=True,
    )
    # Search a: clicks at ranks 2 and 4; search b: one click at rank 3. Rows interleaved on purpose.
    search = ["a", "b", "a", "b", "a", "b", "a", "b", "a", "b"]
    ranks = [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    clicked = [0, 0, 1, 0, 0, 1, 1, 0, 0, 0]
    weights = search_weights(search, ranks, clicked, curve)
    # a: rank 1 is above both clicks (mean of 2 and 4), rank 3 above the rank-4 click only, rank 5 below all.
    np.testing.assert_allclose(weights[0::2], [3.0, 2.0, 4.0, 4.0, 0.0])
    # b: ranks 1-2 are skip-above negatives of the rank-3 click (weight 2.5), ranks 4-5 are not negatives.
    np.testing.assert_allclose(weights[1::2], [2.5, 2.5, 2.5, 0.0, 0.0])
    assert search_weights([], [], [], curve).shape == (0,)


def swapped_logs(eta: float, seed: int, n_searches: int) -> list[tuple[str, int, int, int]]:
    """A fixed ranker per query, and in every search one random adjacent pair swapped."""
    rng = np.random.default_rng(seed)
    n_queries, n_docs = 300, 20
    gamma = rng.beta(0.6, 1.2, size=(n_queries, n_docs))
    base = np.argsort(-(gamma + rng.standard_normal((n_queries, n_docs))), axis=1)[:, :K]
    query = rng.integers(0, n_queries, n_searches)
    logged = np.tile(np.arange(K), (n_searches, 1))
    at, rows_ = rng.integers(0, K - 1, n_searches), np.arange(n_searches)
    logged[rows_, at], logged[rows_, at + 1] = at + 1, at  # logged[s, shown] = the ranker's position
    docs = np.take_along_axis(base[query], logged, axis=1)
    clicks = rng.random((n_searches, K)) < true_curve(eta) * np.take_along_axis(gamma[query], docs, axis=1)
    ranks, clicked = (logged + 1).tolist(), clicks.astype(int).tolist()
    return [(f"s{s}", ranks[s][j], j + 1, clicked[s][j]) for s in range(n_searches) for j in range(K)]


@pytest.mark.parametrize("eta", [0.5, 1.0])
def test_swap_interventions_recover_the_curve(eta: float) -> None:
    """Chained ratios compound their errors: 30k searches for max |error| <= 0.08 (seeds 0..7: at most 0.064)."""
    curve = swap_propensities(swapped_logs(eta, seed=6, n_searches=30_000), max_rank=K)
    assert curve.method == "swap" and curve.observed.all() and curve.theta[0] == 1.0
    assert np.max(np.abs(curve.theta - true_curve(eta))) <= 0.08
    with pytest.raises(InvalidInput, match="no clicks"):
        swap_propensities([("s", 1, 2, 0), ("s", 2, 1, 0)], max_rank=2)


def test_swap_chain_breaks_where_a_pair_was_never_swapped() -> None:
    rows = []
    for s in range(40):
        swapped = s % 2 == 1  # only ranks 1 and 2 are ever swapped
        for shown, logged in ((1, 2 if swapped else 1), (2, 1 if swapped else 2), (3, 3)):
            rows.append((f"s{s}", logged, shown, int((s + shown) % 3 == 0)))
    curve = swap_propensities(rows, max_rank=3)
    np.testing.assert_array_equal(curve.observed, [True, True, False])
    assert curve.theta[2] == curve.theta[1] and curve.pairs == 40 and curve.searches == 40
