"""The HTML page of a promotion report: self-contained (inline CSS and SVG charts), every user string escaped."""

from __future__ import annotations

import html
import io
import json
import math
import re
import threading
from typing import Any

from flywheel.cycle.report.online_html import online_chart, online_rows
from flywheel.cycle.report.view import as_list, as_num, dig, pair_block, sort_key, summary_row

DECISION_COLOURS = {"promoted": "#1a7f37", "rejected": "#b7791f", "failed": "#cf222e"}
OTHER_COLOUR = "#57606a"
HISTORY_LIMIT = 50  # more cycles than this make the history chart unreadable
MAX_EXAMPLES = 20
MAX_TEXT = 300  # characters of a document shown in an example; report.json keeps the full text
_MPL_LOCK = threading.Lock()  # rc_context swaps global rcParams, and cycles and API requests run in threads
_RETRIEVAL_LABELS = {"ndcg@10": "nDCG@10", "mrr@10": "MRR@10", "recall@10": "Recall@10"}
_COUNT_LABELS = {
    "events": "feedback events",
    "searches": "searches",
    "pairs": "mined pairs",
    "positives": "positives",
    "negatives": "negatives",
    "queries": "distinct queries",
    "train_pairs": "training pairs",
    "heldout_pairs": "held-out pairs",
    "heldout_queries": "held-out queries",
    "train_examples": "training examples",
}


class _Safe(str):
    """Markup that is already escaped, so _table passes it through instead of escaping it twice."""


def _svg(fig: Any, salt: str) -> str:
    """The figure as an inline <svg> element: no XML prologue or metadata, ids fixed by the salt.

    Text stays <text> (svg.fonttype none) rather than glyph paths: smaller, and no glyph ids repeated across charts.
    """
    import matplotlib  # imported here so that listing reports (the API) does not pay for matplotlib

    buf = io.StringIO()
    with _MPL_LOCK, matplotlib.rc_context({"svg.hashsalt": salt, "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return re.sub(r"<metadata>.*?</metadata>\s*", "", text[text.index("<svg") :], flags=re.S)


def _history_chart(cycles: list[dict[str, Any]], current: Any) -> str | None:
    """Error rate and nDCG@10 of incumbent and candidate per cycle (oldest first), or None without data."""
    series = {
        "error rate (%)": [[as_num(c.get(f"error_{who}")) for who in ("incumbent", "candidate")] for c in cycles],
        "nDCG@10": [[as_num(c.get(f"ndcg_{who}")) for who in ("incumbent", "candidate")] for c in cycles],
    }
    panels = {k: v for k, v in series.items() if any(x is not None for pair in v for x in pair)}
    if len(cycles) < 2 or not panels:
        return None
    from matplotlib.figure import Figure  # the object API: no pyplot state, no GUI backend, thread-safe
    from matplotlib.lines import Line2D

    xs = list(range(1, len(cycles) + 1))
    colours = [DECISION_COLOURS.get(str(c.get("decision")), OTHER_COLOUR) for c in cycles]
    fig = Figure(figsize=(7.5, 2.3 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (label, values) in zip(axes, panels.items(), strict=True):
        scale = 100 if label.startswith("error") else 1
        # Lines join the cycles that have a value, so a failed cycle in between does not break them.
        inc = [(x, p[0] * scale) for x, p in zip(xs, values, strict=True) if p[0] is not None]
        cand = [(x, p[1] * scale, col) for x, p, col in zip(xs, values, colours, strict=True) if p[1] is not None]
        cx, cy, cc = ([c[i] for c in cand] for i in range(3))
        ax.plot([x for x, _ in inc], [y for _, y in inc], color="#8c959f", marker="o", markersize=3, label="incumbent")
        ax.plot(cx, cy, color="#0969da", linewidth=1, alpha=0.6, label="candidate")
        ax.scatter(cx, cy, c=cc, s=30, zorder=3)
        for x, c in zip(xs, cycles, strict=True):
            if c.get("decision") == "failed":  # a failure has no metrics to plot but must still show
                ax.axvline(x, color=DECISION_COLOURS["failed"], linestyle=":", linewidth=1)
            if c.get("cycle_id") == current:
                ax.axvspan(x - 0.3, x + 0.3, color="#ddf4ff", zorder=0)
        ax.set_ylabel(label, fontsize=9)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=8)
    proxies = [Line2D([], [], color=col, marker="o", linestyle="", label=d) for d, col in DECISION_COLOURS.items()]
    proxies[-1] = Line2D([], [], color=DECISION_COLOURS["failed"], linestyle=":", label="failed")
    axes[0].legend(
        handles=[*axes[0].get_legend_handles_labels()[0], *proxies],
        fontsize=7,
        ncols=5,
        loc="lower left",
        bbox_to_anchor=(0, 1.01),
        frameon=False,
    )
    axes[-1].set_xlabel("cycle (oldest to newest; shaded: this cycle)", fontsize=9)
    axes[-1].set_xticks(xs[:: math.ceil(len(xs) / 20)])
    return _svg(fig, "flywheel-history")


def _loss_chart(training: Any) -> str | None:
    """The training loss against step, or None when no loss was logged."""
    curve = as_list(dig(training, "loss_curve"))
    points = [(as_num(p[0]), as_num(p[1])) for p in curve if isinstance(p, list | tuple) and len(p) >= 2]
    points = [(s, v) for s, v in points if s is not None and v is not None]
    if not points:
        return None
    from matplotlib.figure import Figure

    ax = (fig := Figure(figsize=(7.5, 2.6))).subplots()
    ax.plot([s for s, _ in points], [v for _, v in points], color="#0969da", marker="." if len(points) < 50 else "")
    ax.set_xlabel("step", fontsize=9)
    ax.set_ylabel("training loss", fontsize=9)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=8)
    if training.get("stopped_early"):
        ax.set_title("stopped early", fontsize=9)
    return _svg(fig, "flywheel-loss")


def _e(value: Any) -> str:
    """HTML-escape any value: queries, documents, reasons and tracebacks come from users."""
    return html.escape(str(value), quote=True)


def _ci(ci: Any, fmt: str, scale: float = 1) -> str:
    """ " (95% CI low..high)" for a [low, high] pair of numbers, else "" (CIs are optional everywhere)."""
    lo, hi = (as_num(x) for x in ci) if isinstance(ci, list | tuple) and len(ci) == 2 else (None, None)
    return "" if lo is None or hi is None else f" (95% CI {lo * scale:{fmt}}..{hi * scale:{fmt}})"


def _rate(value: Any, ci: Any = None) -> str:
    """A rate as a percentage with one decimal, with its CI if known."""
    v = as_num(value)
    return "not measured" if v is None else f"{v:.1%}{_ci(ci, '.1%')}"


def _points(mean: Any, ci: Any) -> str:
    """A change of rate in percentage points with its CI, e.g. "-3.9 pt (95% CI -5.0..-2.8)"."""
    m = as_num(mean)
    return "n/a" if m is None else f"{m * 100:+.1f} pt{_ci(ci, '.1f', 100)}"


def _score(value: Any, sign: bool = False, ci: Any = None, missing: str = "not measured") -> str:
    """A score such as nDCG or AUC with three decimals (and its CI)."""
    v = as_num(value)
    return missing if v is None else f"{v:{'+' if sign else ''}.3f}{_ci(ci, '.3f')}"


def _reduction(value: Any) -> str:
    """Relative error reduction in words: the share of the incumbent's mistakes that the candidate avoids."""
    v = as_num(value)
    if v is None:
        return "n/a"
    return f"{v:.1%} of the mistakes avoided" if v >= 0 else f"{-v:.1%} more mistakes"


def _seconds(value: Any) -> str:
    """A duration for people: "0.40 s", "2 min 0.5 s"."""
    v = as_num(value)
    if v is None:
        return "n/a"
    return f"{v:.2f} s" if v < 60 else f"{int(v // 60)} min {v % 60:.1f} s"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; cells are escaped unless they are _Safe markup."""
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    cells = ("".join(f"<td>{c if isinstance(c, _Safe) else _e(c)}</td>" for c in row) for row in rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str, id_: str = "") -> str:
    """A short grey note, e.g. where a chart has no data."""
    attr = f' id="{_e(id_)}"' if id_ else ""
    return f'<p class="note"{attr}>{_e(text)}</p>'


def _figure(svg: str | None, id_: str, caption: str, empty: str) -> str:
    """A chart with its caption, or the "no data" note."""
    if svg is None:
        return _note(empty, f"{id_}-nodata")
    return f'<figure id="{id_}">{svg}<figcaption>{_e(caption)}</figcaption></figure>'


def _pair_rows(label: str, block: dict[str, Any]) -> list[list[Any]]:
    """Metric-table rows of a pair-error comparison (held-out pairs or the golden set)."""
    inc, cand = dig(block, "incumbent"), dig(block, "candidate")
    auc_i, auc_c = as_num(dig(inc, "roc_auc")), as_num(dig(cand, "roc_auc"))
    auc_delta = _score(auc_c - auc_i, sign=True) if auc_i is not None and auc_c is not None else "n/a"
    n_i, n_c = dig(inc, "n"), dig(cand, "n")
    return [
        [
            f"{label}: error rate",
            _rate(dig(inc, "error_rate"), dig(inc, "ci95")),
            _rate(dig(cand, "error_rate"), dig(cand, "ci95")),
            _points(dig(block, "delta", "mean"), dig(block, "delta", "ci95")),
        ],
        [f"{label}: relative reduction", "", "", _reduction(dig(block, "relative_reduction"))],
        [f"{label}: ROC AUC", _score(auc_i), _score(auc_c), auc_delta],
        [f"{label}: n", "n/a" if n_i is None else n_i, "n/a" if n_c is None else n_c, ""],
    ]


def _metrics(metrics: Any) -> str:
    """The incumbent-vs-candidate table, or a note when nothing was measured."""
    rows: list[list[Any]] = []
    if pair := pair_block(dig(metrics, "pair_error")):
        rows += _pair_rows("held-out pairs", pair)
    views = [(label, v) for label, key in _VIEWS if isinstance(v := dig(metrics, key), dict)]
    for label, view in views:
        rows += _view_rows(label, view)
    if rows and not views:  # e.g. rejected before re-embedding: say so rather than leave the reader wondering
        rows.append(["retrieval (nDCG, MRR, Recall@10)", "not measured", "not measured", "n/a"])
    if golden := pair_block(dig(metrics, "golden")):
        rows += _pair_rows("golden set", golden)
    if not rows:
        return _note("No metrics were measured in this cycle.")
    return _table(["metric", "incumbent", "candidate", "change (candidate - incumbent)"], rows)


_VIEWS = (("next traffic", "next_traffic"), ("unseen queries", "retrieval"))


def _view_rows(label: str, view: dict[str, Any]) -> list[list[Any]]:
    """One retrieval view: each metric, its size and minimal detectable effect, and its parts (nDCG@10)."""
    rows: list[list[Any]] = []
    # Only per-metric entries: the block also holds compare_scores' incumbent/candidate/delta dicts.
    names = [*_RETRIEVAL_LABELS, *(k for k in view if k not in _RETRIEVAL_LABELS)]
    for name in (n for n in names if isinstance(view.get(n), dict) and "incumbent" in view[n]):
        m = view[name]
        delta = _score(m.get("delta"), sign=True, ci=m.get("ci95"), missing="n/a")
        rows.append(
            [
                f"{label}: {_RETRIEVAL_LABELS.get(name, name)}",
                _score(m.get("incumbent")),
                _score(m.get("candidate")),
                delta,
            ]
        )
    n, mde = view.get("n_queries"), as_num(dig(view, "mde", "ndcg@10"))
    detectable = f"detectable nDCG@10 change: {mde:.3f}" if mde is not None else ""
    rows.append([f"{label}: searches", "n/a" if n is None else n, "", detectable])
    parts = view.get("parts") if isinstance(view.get("parts"), dict) else {}
    for part, p in parts.items():
        if isinstance(p, dict) and "incumbent" in p:
            change = _score(p.get("delta"), sign=True, ci=p.get("ci95"), missing="n/a")
            title = f"{label}, {part.replace('_', ' ')} ({p.get('n_queries')}): nDCG@10"
            rows.append([title, _score(p.get("incumbent")), _score(p.get("candidate")), change])
    return rows


def _training(training: Any) -> str:
    """Training facts and hyperparameters, or a note when no training ran."""
    if not isinstance(training, dict):
        return _note("No training ran in this cycle.")
    early, steps, planned = training.get("stopped_early"), training.get("steps", "n/a"), training.get("planned_steps")
    early = ("yes" if early else "no") if isinstance(early, bool) else "n/a"
    early += f" ({training['stop_reason']})" if training.get("stop_reason") else ""
    steps = f"{steps} of {planned} planned" if planned else steps
    rows = [
        ["duration", _seconds(training.get("duration_s"))],
        ["steps", steps],
        ["device", training.get("device", "n/a")],
        ["stopped early", early],
    ]
    hyper = training.get("hyperparameters")
    hyper = hyper.items() if isinstance(hyper, dict) else []
    rows += [[k, v if isinstance(v, str) else json.dumps(v, default=str)] for k, v in hyper]
    return _table(["training", "value"], rows)


def _examples(examples: Any) -> str:
    """Queries with the incumbent's and the candidate's top results; relevant documents are ticked."""
    if not (examples := as_list(examples)):
        return _note("No examples recorded.")
    parts = []
    for ex in (x for x in examples[:MAX_EXAMPLES] if isinstance(x, dict)):
        relevant = {str(r) for r in as_list(ex.get("relevant"))}
        cols = []
        for title, key in (("before (incumbent)", "before"), ("after (candidate)", "after")):
            items = []
            for hit in (h for h in as_list(ex.get(key)) if isinstance(h, dict)):
                doc_id, text = str(hit.get("doc_id", "")), str(hit.get("text", ""))
                text = text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"
                mark = '<li class="hit"><span class="ok">✓</span> ' if doc_id in relevant else "<li>"
                items.append(f"{mark}<code>{_e(doc_id)}</code> {_e(text)}</li>")
            body = f"<ol>{''.join(items)}</ol>" if items else _note("not measured")
            cols.append(f"<div><h4>{_e(title)}</h4>{body}</div>")
        rel = _e(", ".join(sorted(relevant)) or "none recorded")
        parts.append(
            f'<div class="example"><h3>{_e(ex.get("query", ""))}</h3><p class="note">relevant: {rel}</p>'
            f'<div class="cols">{"".join(cols)}</div></div>'
        )
    more = _note(f"Showing {MAX_EXAMPLES} of {len(examples)} examples.") if len(examples) > MAX_EXAMPLES else ""
    return "".join(parts) + more


def _onnx(section: dict[str, Any]) -> str:
    """Which backends were asked for and which serve, and the int8 accuracy guard's verdict."""

    def pair(value: Any) -> str:
        return f"query {dig(value, 'query') or 'n/a'}, corpus {dig(value, 'bulk') or 'n/a'}"

    rows: list[list[Any]] = [["requested", pair(section.get("requested"))]]
    if isinstance(section.get("serving"), dict):
        rows.append(["serving", pair(section["serving"])])
    guard = section.get("guard")
    if isinstance(guard, dict):
        verdict = {True: "passed", False: "refused"}.get(guard.get("passed"), "n/a")
        detail = f"{verdict}: {guard.get('reason') or ''} (on {guard.get('data') or 'n/a'})"
        rows.append(["int8 accuracy guard", detail])
    for key in ("parity", "quantization", "opset", "folder", "error"):
        if section.get(key) is not None:
            value = section[key]
            rows.append([key, value if isinstance(value, str) else json.dumps(value, default=str)])
    return _table(["ONNX", "value"], rows)


_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1000px;
padding:1.5rem;color:#1f2328;line-height:1.45}h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.15rem;
border-bottom:1px solid #d0d7de;padding-bottom:.2rem;margin-top:2rem}h3{font-size:1rem;margin:.2rem 0}
h4{font-size:.9rem;margin:.3rem 0}.badge{display:inline-block;padding:.15rem .6rem;border-radius:1rem;color:#fff;
font-size:.9rem;vertical-align:middle}.badge-promoted{background:#1a7f37}.badge-rejected{background:#b7791f}
.badge-failed{background:#cf222e}.badge-other{background:#57606a}.meta,.note{color:#57606a;font-size:.9rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #d0d7de;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}.ok{color:#1a7f37;font-weight:bold}.bad{color:#cf222e;
font-weight:bold}pre.error{background:#fff5f5;border:1px solid #cf222e;padding:.7rem;font-size:.8rem;
white-space:pre-wrap}svg{max-width:100%;height:auto}figure{margin:0}figcaption{color:#57606a;font-size:.85rem}
.example{border:1px solid #d0d7de;border-radius:6px;padding:.6rem;margin:.6rem 0}.cols{display:grid;
grid-template-columns:1fr 1fr;gap:1rem}.cols ol{padding-left:1.4rem;margin:0;font-size:.88rem}
li.hit{background:#dafbe1}code{font-size:.85em}"""


def render_html(report: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """Render a report as one self-contained HTML page: inline CSS and SVG, every user string escaped.

    Args:
        report: The report dict; any field may be missing or None.
        history: list_reports summaries; the current report is added (replacing an entry with its cycle_id).

    Returns:
        The HTML text; the same inputs give the same text.
    """
    current = summary_row(report)
    cid, decision = report.get("cycle_id") or "unknown", str(report.get("decision") or "unknown")
    cycles = [s for s in history if s.get("cycle_id") != current["cycle_id"]] + [current]
    cycles = sorted(cycles, key=sort_key)[-HISTORY_LIMIT:]
    badge = f"badge-{decision}" if decision in DECISION_COLOURS else "badge-other"
    window = report.get("window") if isinstance(report.get("window"), dict) else {}
    meta = [
        f"created {report.get('created_at') or 'n/a'}",
        f"kind {report.get('kind') or 'n/a'}",
        f"incumbent {report.get('incumbent') or 'n/a'} → candidate {report.get('candidate') or 'none'}",
        f"serving after: {report.get('serving_after') or 'n/a'}",
        f"feedback window {window.get('start') or 'n/a'} → {window.get('end') or 'n/a'}",
    ]
    if as_num(report.get("duration_s")) is not None:
        meta.append(f"took {_seconds(report['duration_s'])}")
    body = [
        f'<header><h1>Cycle <code>{_e(cid)}</code> <span class="badge {badge}">{_e(decision)}</span></h1>'
        f'<p class="meta">{" · ".join(_e(m) for m in meta)}</p></header>'
    ]

    def section(title: str, content: str) -> None:
        body.append(f"<section><h2>{_e(title)}</h2>{content}</section>")

    if report.get("error"):
        section("Error", f'<pre class="error">{_e(report["error"])}</pre>')
    reasons = "".join(f"<li>{_e(r)}</li>" for r in as_list(report.get("reasons")) if r is not None)
    section("Reasons", f"<ul>{reasons}</ul>" if reasons else _note("No reasons recorded."))
    marks = {True: _Safe('<span class="ok">✓</span>'), False: _Safe('<span class="bad">✗</span>')}
    checks = [c for c in as_list(report.get("checks")) if isinstance(c, dict)]
    rows = [
        [c.get("name", ""), marks[c["passed"]] if isinstance(c.get("passed"), bool) else "–", c.get("detail") or ""]
        for c in checks
    ]
    section("Promotion gate", _table(["check", "passed", "detail"], rows) if rows else _note("No checks ran."))
    section("Metrics", _metrics(report.get("metrics")))
    counts = report.get("counts") if isinstance(report.get("counts"), dict) else {}
    keys = [*(k for k in _COUNT_LABELS if k in counts), *(k for k in counts if k not in _COUNT_LABELS)]
    rows = [[_COUNT_LABELS.get(k, k), f"{counts[k]:,}" if as_num(counts[k]) is not None else counts[k]] for k in keys]
    section("Counts", _table(["count", "value"], rows) if rows else _note("No counts recorded."))
    caption = "Error rate (lower is better) and nDCG@10 (higher is better) per cycle; candidate markers coloured by "
    caption += "decision (green promoted, amber rejected, red failed); dotted red lines mark failed cycles."
    empty = "No data yet: the history chart appears once there are at least two cycles with metrics."
    section("History", _figure(_history_chart(cycles, current["cycle_id"]), "history-chart", caption, empty))
    training = report.get("training")
    loss = _figure(_loss_chart(training), "loss-chart", "Training loss by step.", "No data: no training loss logged.")
    section("Training", loss + _training(training))
    if isinstance(report.get("onnx"), dict):
        section("Encoders (ONNX Runtime)", _onnx(report["onnx"]))
    if isinstance(report.get("online"), dict):
        online = report["online"]
        caption = "The candidate's share of the interleaved lists it won, with the band it lies in at every look "
        caption += "(valid however often the test looked); the test stops once the band leaves 0.5."
        chart = _figure(online_chart(online, _svg), "online-chart", caption, "No chart: too few decisive lists.")
        section("Online test", chart + _table(["", "value"], online_rows(online)))
    timings = report.get("timings") if isinstance(report.get("timings"), dict) else {}
    total = sum(v for v in map(as_num, timings.values()) if v is not None)
    rows = [[k, _seconds(v)] for k, v in timings.items()] + [["total", _seconds(total)]]
    section("Timings", _table(["stage", "time"], rows) if timings else _note("No timings recorded."))
    section("Examples", _examples(report.get("examples")))
    title = f"flywheel cycle {_e(cid)}: {_e(decision)}"
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width, initial-scale=1"><title>{title}</title><style>{_CSS}</style></head>'
        f"<body>{''.join(body)}</body></html>\n"
    )
