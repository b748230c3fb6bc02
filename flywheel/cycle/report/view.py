"""Reading a report defensively (reports on disk may be old or hand-edited): nested values, numbers, summary rows."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def dig(data: Any, *keys: str) -> Any:
    """A nested value, or None where any level is missing or not a dict."""
    for key in keys:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def as_list(value: Any) -> list[Any]:
    """A list field as a list: None means empty, and a lone string is one item rather than its characters."""
    return value if isinstance(value, list) else ([] if value is None else [value])


def as_num(value: Any) -> float | None:
    """A finite number as float, else None (bools and strings from hand-edited JSON are not metrics)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def pair_block(block: Any) -> dict[str, Any] | None:
    """A pair-error block with `delta` and `relative_reduction`; compare_pair_error's own key names are read too."""
    if not isinstance(block, dict):
        return None
    native = {
        "delta": {"mean": block.get("delta_error"), "ci95": block.get("delta_ci95")},
        "relative_reduction": block.get("relative_error_reduction"),
    }
    return {**native, **block}


def summary_row(report: dict[str, Any]) -> dict[str, Any]:
    """The list_reports row of one report."""
    pair, ndcg = pair_block(dig(report, "metrics", "pair_error")), dig(report, "metrics", "retrieval", "ndcg@10")
    return {
        **{k: report.get(k) for k in ("cycle_id", "created_at", "decision", "kind", "incumbent", "candidate")},
        "error_incumbent": as_num(dig(pair, "incumbent", "error_rate")),
        "error_candidate": as_num(dig(pair, "candidate", "error_rate")),
        "ndcg_incumbent": as_num(dig(ndcg, "incumbent")),
        "ndcg_candidate": as_num(dig(ndcg, "candidate")),
    }


def sort_key(summary: dict[str, Any]) -> tuple[datetime, str]:
    """Order by created_at (unparsable ones oldest), then cycle_id, so the order is total and stable."""
    try:
        when = datetime.fromisoformat(str(summary.get("created_at")))
    except ValueError:
        when = datetime.min
    return (when if when.tzinfo else when.replace(tzinfo=UTC)), str(summary.get("cycle_id"))
