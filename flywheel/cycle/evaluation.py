"""How a cycle compares incumbent and candidate: pair error and retrieval, each scored as it would serve."""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter, normalise
from flywheel.scoring.pair_error import compare_scored, cosine_scores
from flywheel.scoring.ranking import compare_scores
from flywheel.types import LabelledPair


def adapted_pair_error(
    encoder: Encoder, adapter: QueryAdapter | None, challenger: Any, pairs: list[LabelledPair], seed: int
) -> dict[str, Any] | None:
    """Pair error of (encoder + query adapter) against a full challenger model on labelled text pairs."""
    if not pairs:
        return None
    queries = AdaptedQueries(encoder.version, encoder.encode, adapter).encode([p.query for p in pairs])
    docs = normalise(encoder.encode([p.document for p in pairs]))
    return compare_scored(pairs, (queries * docs).sum(1), cosine_scores(challenger, pairs), seed)


def heldout_queries(heldout_rows: list[Any]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The held-out query groups with a click: (group -> query text, group -> clicked document ids)."""
    queries = {p.group: p.query for p in heldout_rows if p.label == 1}
    relevant: dict[str, set[str]] = {}
    for p in heldout_rows:
        if p.label == 1:
            relevant.setdefault(p.group, set()).add(p.doc_id)
    return queries, relevant


def retrieval_block(inc: dict[str, np.ndarray], cand: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The report's retrieval section from both models' per-query metrics: means, paired CIs, and per metric
    one {"incumbent", "candidate", "delta", "ci95"} entry (what the gate and the HTML page read)."""
    out = compare_scores(inc, cand, seed=seed)
    for m, change in out["delta"].items():
        out[m] = {
            "incumbent": out["incumbent"][m],
            "candidate": out["candidate"][m],
            "delta": change["mean"],
            "ci95": change["ci95"],
        }
    return out
