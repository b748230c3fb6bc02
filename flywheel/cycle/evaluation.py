"""How a cycle compares incumbent and candidate: pair error and retrieval, each scored as it would serve."""

from __future__ import annotations

from typing import Any

from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter, normalise
from flywheel.scoring.pair_error import compare_scored, cosine_scores
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
