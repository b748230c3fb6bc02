"""How well flywheel.learn.propensity recovers a known position-bias curve from synthetic logs, over seeds.

Each world: 300 queries x 20 candidate documents, relevance gamma ~ Beta(0.6, 1.2), top 10 shown, clicks
from the position-based model with theta_r = (1/r)^eta (or a cascade with 0.85^(r-1) and a stop at the
first click). Rankers: "reranked" (relevance + N(0, 0.5^2) noise, redrawn every search: a ranker that keeps
changing) or "swapped" (one fixed noisy order per query, one random adjacent pair swapped in every search).
The table gives the max |estimate - truth| over ranks 1..10, min-max over seeds, and the mean fit time.

    .venv/bin/python bench/propensity_recovery.py [--seeds 5]

Results are written to bench/results/propensity_recovery.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.learn.propensity import ShownResult, estimate_propensities, swap_propensities

K, QUERIES, DOCS = 10, 300, 20
OUT = Path(__file__).resolve().parent / "results" / "propensity_recovery.json"


def world(kind: str, eta: float, n: int, seed: int) -> tuple[dict[str, Any], np.ndarray]:
    """Rows for both estimators ('em': ShownResult, 'swap': (search, logged, shown, clicked)) and the truth."""
    rng = np.random.default_rng(seed)
    gamma = rng.beta(0.6, 1.2, size=(QUERIES, DOCS))
    query = rng.integers(0, QUERIES, n)
    logged = np.tile(np.arange(K), (n, 1))  # logged[s, shown] = the ranker's position of what is shown
    if kind == "swapped":
        base = np.argsort(-(gamma + rng.standard_normal((QUERIES, DOCS))), axis=1)[:, :K]
        at, rows = rng.integers(0, K - 1, n), np.arange(n)
        logged[rows, at], logged[rows, at + 1] = at + 1, at
        order = np.take_along_axis(base[query], logged, axis=1)
    else:
        order = np.argsort(-(gamma[query] + 0.5 * rng.standard_normal((n, DOCS))), axis=1)[:, :K]
    relevance = np.take_along_axis(gamma[query], order, axis=1)
    if kind == "cascade":
        truth = 0.85 ** np.arange(K)
        wants = rng.random((n, K)) < truth * relevance
        first = np.where(wants.any(axis=1), wants.argmax(axis=1), -1)
        clicks = np.arange(K) == first[:, None]
    else:
        truth = (1.0 / np.arange(1, K + 1)) ** eta
        clicks = rng.random((n, K)) < truth * relevance
    queries, docs, clicked, ranks = query.tolist(), order.tolist(), clicks.astype(int).tolist(), logged.tolist()
    em = [
        ShownResult(f"s{s}", f"q{queries[s]}", f"d{docs[s][j]}", j + 1, clicked[s][j])
        for s in range(n)
        for j in range(K)
    ]
    swap = [(f"s{s}", ranks[s][j] + 1, j + 1, clicked[s][j]) for s in range(n) for j in range(K)]
    return {"em": em, "swap": swap, "any": clicks.any(axis=1)}, truth


# (label, world, eta, searches, rows fitted: clicked searches or all, estimator, keyword arguments)
CASES: list[tuple[str, str, float, int, str, str, dict[str, Any]]] = [
    ("reranked, raw click rate per rank (no model)", "reranked", 0.5, 10_000, "clicked", "ctr", {}),
    ("reranked, raw click rate per rank (no model)", "reranked", 1.0, 10_000, "clicked", "ctr", {}),
    ("reranked, clicked searches (default)", "reranked", 0.5, 10_000, "clicked", "em", {}),
    ("reranked, clicked searches (default)", "reranked", 1.0, 10_000, "clicked", "em", {}),
    ("reranked, clicked, selection ignored", "reranked", 1.0, 10_000, "clicked", "em", {"all_searches": True}),
    ("reranked, every search", "reranked", 1.0, 10_000, "all", "em", {"all_searches": True}),
    ("reranked, sparse (default)", "reranked", 1.0, 3_000, "clicked", "em", {}),
    ("reranked, sparse, min_impressions=1", "reranked", 1.0, 3_000, "clicked", "em", {"min_impressions": 1}),
    ("swapped, EM on clicked searches", "swapped", 1.0, 20_000, "clicked", "em", {}),
    ("swapped, swap_propensities", "swapped", 0.5, 20_000, "all", "swap", {}),
    ("swapped, swap_propensities", "swapped", 1.0, 20_000, "all", "swap", {}),
    (
        "cascade, every search, cascade=True",
        "cascade",
        0.0,
        10_000,
        "all",
        "em",
        {"all_searches": True, "cascade": True},
    ),
    ("cascade, every search, PBM (cascade=False)", "cascade", 0.0, 10_000, "all", "em", {"all_searches": True}),
    ("cascade, clicked searches, cascade=True", "cascade", 0.0, 20_000, "clicked", "em", {"cascade": True}),
]


def fit(data: dict[str, Any], rows: str, estimator: str, kwargs: dict[str, Any]) -> tuple[np.ndarray, bool]:
    """Run one estimator on the world's rows: (theta, converged)."""
    if estimator == "swap":
        return swap_propensities(data["swap"], **kwargs).theta, True
    em_rows = [r for r in data["em"] if data["any"][int(r.search_id[1:])]] if rows == "clicked" else data["em"]
    if estimator == "ctr":  # the baseline: click-through rate per rank relative to rank 1
        ranks, clicks = np.array([r.rank for r in em_rows]), np.array([r.clicked for r in em_rows], dtype=float)
        ctr = np.bincount(ranks, weights=clicks, minlength=K + 1)[1:] / np.bincount(ranks, minlength=K + 1)[1:]
        return ctr / ctr[0], True
    curve = estimate_propensities(em_rows, **kwargs)
    return curve.theta, curve.converged


def main() -> None:
    """Run every case over seeds; print a markdown table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    results = []
    print("| logs | eta | searches | max abs error, ranks 1-10 (min-max over seeds) | fit s | converged |")
    print("|---|---|---|---|---|---|")
    for label, kind, eta, n, rows, estimator, kwargs in CASES:
        errors, seconds, converged = [], [], 0
        for seed in range(args.seeds):
            data, truth = world(kind, eta, n, seed)
            start = time.perf_counter()
            theta, ok = fit(data, rows, estimator, kwargs)
            seconds.append(time.perf_counter() - start)
            errors.append(float(np.max(np.abs(theta - truth))))
            converged += ok
        results.append({"case": label, "world": kind, "eta": eta, "searches": n, "errors": errors, "seconds": seconds})
        eta_text = "0.85^(r-1)" if kind == "cascade" else str(eta)
        spread = f"{min(errors):.3f}-{max(errors):.3f}"
        print(f"| {label} | {eta_text} | {n:,} | {spread} | {np.mean(seconds):.2f} | {converged}/{args.seeds} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
