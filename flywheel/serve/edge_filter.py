"""A search's metadata filter as a Qdrant Edge filter (the binding's own types, which qdrant-client's are not)."""

from __future__ import annotations

from typing import Any

import numpy as np
import qdrant_edge as qe


def edge_filter(metadata_filter: dict[str, Any]) -> qe.Filter:
    """The Edge filter of a metadata filter: one condition per key on `metadata.<key>`, all of them must hold."""
    conditions: list[Any] = []
    for key, value in metadata_filter.items():
        path = f"metadata.{key}"
        values = value if isinstance(value, list) else [value]
        homogeneous = all(isinstance(v, str) for v in values) or all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        )
        if homogeneous:
            match = qe.MatchAny(values) if isinstance(value, list) else qe.MatchValue(value)
            conditions.append(qe.FieldCondition(key=path, match=match))
        else:  # booleans or a mix of types, which MatchAny cannot hold: any one of the values
            options = [qe.FieldCondition(key=path, match=qe.MatchValue(_scalar(v))) for v in values]
            conditions.append(options[0] if len(options) == 1 else qe.Filter(should=options))
    return qe.Filter(must=conditions)


def _scalar(value: Any) -> Any:
    """A filter value as the binding reads it: it takes a Python bool for the integer it subclasses (so True
    would match 1 and never a stored true), while numpy's bool is read as a boolean."""
    return np.bool_(value) if isinstance(value, bool) else value
