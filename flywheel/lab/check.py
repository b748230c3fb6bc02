"""Judging what serves on a world's check queries (questions no cycle saw), without logging a search."""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.models.query_adapter import AdaptedQueries
from flywheel.scoring.ranking import compare_scores, retrieval_scores
from flywheel.serve.service import Service


def serving_scores(
    service: Service, queries: dict[str, str], relevant: dict[str, set[str]], k: int = 10
) -> dict[str, np.ndarray]:
    """Per-query nDCG/MRR/Recall@k of what serves now (encoder and query adapter), by exact search over its
    collection's vectors; nothing is written to the search log, so check queries stay unseen by cycles.

    Args:
        service: the open Service.
        queries: query id -> text.
        relevant: query id -> relevant document ids (judgements).
        k: cut-off.
    """
    encoder, adapter = service.encoder, service.adapter  # one snapshot: a swap meanwhile cannot mix them
    ids, vectors = service.index.all_vectors(encoder.version, encoder.dimension)
    side = AdaptedQueries(encoder.version, encoder.encode, adapter)
    return retrieval_scores(side, queries, dict.fromkeys(ids, ""), relevant, k, vectors)


def compare_check(before: dict[str, np.ndarray], after: dict[str, np.ndarray], seed: int = 0) -> dict[str, Any]:
    """Before/after on the check queries: means, the paired change with its 95% CI, and the relative change."""
    out = compare_scores(before, after, seed=seed)
    for metric, change in out["delta"].items():
        base = out["incumbent"][metric]
        change["relative"] = change["mean"] / base if base else None
    return out
