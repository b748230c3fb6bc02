"""The online test in the HTML report: its numbers as table rows and the win share with its band as a chart."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flywheel.cycle.report.view import as_list, as_num

_ROWS = [
    ("mode", "mode"),
    ("challenger", "candidate"),
    ("searches", "searches in the test"),
    ("control_searches", "searches outside the interleaved share"),
    ("wins", "lists the candidate won"),
    ("losses", "lists the incumbent won"),
    ("ties", "ties (feedback, equal credit)"),
    ("win_share", "candidate's win share"),
    ("band", "always-valid band"),
    ("alpha", "error rate (alpha)"),
    ("mean_overlap_at_k", "mean overlap@k with what was shown"),
    ("top1_changed", "searches whose top 1 would change"),
    ("top3_changed", "searches whose top 3 would change"),
    ("duration_s", "duration (s)"),
    ("decision", "decision"),
    ("reason", "why"),
]


def online_rows(online: dict[str, Any]) -> list[list[Any]]:
    """(label, value) rows of the online section, for what the test recorded."""
    rows = []
    for key, label in _ROWS:
        value = online.get(key)
        if value is None:
            continue
        if key == "band" and isinstance(value, list) and len(value) == 2 and None not in value:
            value = f"[{value[0]:.3f}, {value[1]:.3f}]"
        elif key in ("win_share", "mean_overlap_at_k") and as_num(value) is not None:
            value = f"{value:.3f}"
        elif key in ("top1_changed", "top3_changed") and as_num(value) is not None:
            value = f"{value:.0%}"
        rows.append([label, value])
    return rows


def online_chart(online: dict[str, Any], to_svg: Callable[[Any, str], str]) -> str | None:
    """The candidate's win share and its always-valid band against searches (interleaving), or None."""
    points = [
        p for p in as_list(online.get("series")) if isinstance(p, dict) and as_num(p.get("win_share")) is not None
    ]
    points = [p for p in points if isinstance(p.get("band"), list) and len(p["band"]) == 2 and None not in p["band"]]
    if online.get("mode") != "interleave" or len(points) < 2:
        return None
    from matplotlib.figure import Figure

    xs = [p["searches"] for p in points]
    ax = (fig := Figure(figsize=(7.5, 2.6))).subplots()
    ax.fill_between(xs, [p["band"][0] for p in points], [p["band"][1] for p in points], color="#ddf4ff", label="band")
    ax.plot(xs, [p["win_share"] for p in points], color="#0969da", label="candidate's win share")
    ax.axhline(0.5, color="#8c959f", linestyle="--", linewidth=1, label="no difference")
    ax.set_ylim(0, 1)
    ax.set_xlabel("searches in the test", fontsize=9)
    ax.set_ylabel("win share", fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="lower right", frameon=False)
    return to_svg(fig, "flywheel-online")
