"""The adapter cycle's debiasing step: estimate how often each rank is read, weight the clicks by its inverse.

The curve is fitted on the training side of the log (searches before the next-traffic window) by the
position-based click model (`flywheel.learn.propensity`). A ranker that never changed leaves the curve
unidentified (each query-document pair was only ever shown at one rank); then the step says so in the report
and training goes on unweighted, rather than guessing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from flywheel.cycle.mining import MinedPairs
from flywheel.errors import InvalidInput
from flywheel.learn.propensity import ShownResult, estimate_propensities, ips_weights
from flywheel.serve.ledger import shown_results
from flywheel.serve.store import Store
from flywheel.util.text import normalise_query

log = logging.getLogger(__name__)


def click_weights(store: Store, mined: MinedPairs, click_ranks: np.ndarray, k: int) -> tuple[np.ndarray | None, dict]:
    """Inverse-propensity weights of the training examples, and the report's propensity section.

    Args:
        store: the open store.
        mined: this cycle's mining (its window and next-traffic start bound the rows the curve is fitted on).
        click_ranks: (n,) the mean rank each example's click was shown at (1-based).
        k: results shown per search (the deepest rank estimated).

    Returns:
        (weights, or None when the log cannot support an estimate; the curve as a dict, or the reason).
    """
    rows = [
        ShownResult(search_id, normalise_query(query), doc_id, int(rank), int(clicked))
        for search_id, query, doc_id, rank, clicked in shown_results(
            store, mined.window_end, mined.next_traffic_start, mined.window_start
        )
    ]
    try:
        curve = estimate_propensities(rows, max_rank=k)
    except InvalidInput as exc:
        log.info("no propensity estimate, training unweighted: %s", exc)
        return None, {"estimated": False, "reason": str(exc)}
    ranks = np.maximum(1, np.rint(click_ranks)).astype(np.int64)
    weights = ips_weights(ranks, curve)
    summary: dict[str, Any] = {"estimated": True, **curve.to_dict(), "mean_weight": round(float(weights.mean()), 3)}
    return weights, summary
