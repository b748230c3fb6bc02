"""The sweep's chart, like the seed article's figure: error rate vs training pairs, one panel per base model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")
_STYLES = {"full": ("-", "o"), "frozen-dense": ("--", "s"), "query-adapter": (":", "D")}


def draw_chart(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw pair error (%) vs number of training pairs (log x) with 95% CIs; the untrained base is a flat line.

    One panel per base model; one line per dimension x mode (colour = dimension, line style = mode).

    Args:
        rows: Sweep rows (as written to the CSV; values may be strings).
        path: The PNG to write (written to a temp file, then renamed).

    Returns:
        `path`.
    """
    from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    models = list(dict.fromkeys(str(r["model"]) for r in rows)) or ["(no results)"]
    dims = list(dict.fromkeys(str(r["dim"]) for r in rows))
    colour = {d: _COLOURS[i % len(_COLOURS)] for i, d in enumerate(dims)}
    fig = Figure(figsize=(5.2 * len(models), 4.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models, strict=True):
        mine = [r for r in rows if str(r["model"]) == model]
        for r in (r for r in mine if r["mode"] == "base"):
            dim = str(r["dim"])
            ax.axhline(100 * float(r["error_rate"]), color=colour[dim], linestyle=":", label=f"untrained, dim {dim}")
        for (dim, mode), line in _lines(mine).items():
            xs = [int(r["n_train"]) for r in line]
            ys = [100 * float(r["error_rate"]) for r in line]
            lows = [100 * float(r["ci_low"]) for r in line]
            highs = [100 * float(r["ci_high"]) for r in line]
            style, marker = _STYLES.get(mode, ("-.", "^"))
            name = "fine-tune" if mode == "full" else mode
            ax.plot(xs, ys, color=colour[dim], linestyle=style, marker=marker, markersize=4, label=f"dim {dim}, {name}")
            ax.fill_between(xs, lows, highs, color=colour[dim], alpha=0.1, linewidth=0)
        ax.set_xscale("log")
        sizes = sorted({int(r["n_train"]) for r in mine if r["mode"] != "base"})
        if sizes:
            ax.set_xticks(sizes)  # label the sizes that were run, as plain numbers rather than 10^k
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(Path(model.rstrip("/")).name or model, fontsize=10)
        ax.set_xlabel("training pairs (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel("pair error rate on held-out pairs (%)")
    fig.suptitle("Pair error vs training pairs (shaded: 95% CI; dotted: untrained base)", fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path


def _lines(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Trained rows grouped by (dim, mode), each sorted by training size."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["mode"] != "base":
            out.setdefault((str(r["dim"]), str(r["mode"])), []).append(r)
    return {key: sorted(line, key=lambda r: int(r["n_train"])) for key, line in out.items()}
