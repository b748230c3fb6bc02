"""The HTML page of a report: self-contained, escaped, formatted, and robust to missing or malformed fields."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.cycle.report.files import list_reports, load_report, report_html_path, write_report
from flywheel.cycle.report.html import render_html
from tests.helpers.factories import XSS, make_report
from tests.helpers.paths import ROOT


def test_html_is_self_contained_complete_and_escaped(tmp_path: Path) -> None:
    report = make_report()
    page = report_html_path(tmp_path / "r", write_report(tmp_path / "r", report).name).read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"<script|<link|@import|url\((?!#)", page, re.I)  # clip paths use local url(#id)
    assert XSS not in page and "<b>fast</b>" not in page
    assert "how to learn python &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "lose weight &lt;b&gt;fast&lt;/b&gt;" in page
    assert 'class="badge badge-promoted">promoted<' in page
    for reason in report["reasons"]:
        assert f"<li>{reason.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</li>" in page
    assert "error_rate_improvement" in page and "✓" in page and "✗" in page
    # Formats: rates in percent with one decimal, deltas in points with the CI, the reduction in words.
    assert "22.0% (95% CI 20.0%..24.0%)" in page and "18.1%" in page
    assert "-3.9 pt (95% CI -5.0..-2.8)" in page
    assert "17.7% of the mistakes avoided" in page
    assert "+0.050 (95% CI 0.030..0.070)" in page
    assert "1,234" in page and "2 min 0.5 s" in page
    assert page.count("<svg") == 1 and 'id="loss-chart"' in page  # the loss chart; no history yet
    assert 'id="history-chart-nodata"' in page


def _summary(cycle_id: str, created_at: str, decision: str, error: float) -> dict:
    """A list_reports row of an earlier cycle."""
    return {
        "cycle_id": cycle_id,
        "created_at": created_at,
        "decision": decision,
        "error_incumbent": 0.23,
        "error_candidate": error,
        "ndcg_incumbent": 0.6,
        "ndcg_candidate": None,
    }


def test_same_inputs_give_the_same_page_in_any_order_and_in_another_process(tmp_path: Path) -> None:
    """Charts are inline SVG with fixed ids and no date, the history is ordered by time, so the page is a pure
    function of (report, history): a report rewritten later, or by another process, is byte-identical."""
    report = make_report()
    history = [
        _summary("c0", "2026-11-20T00:00:00+00:00", "rejected", 0.24),
        _summary("c1", "2026-11-21T00:00:00+00:00", "failed", 0.25),
    ]
    page = render_html(report, history)
    assert page.count("<svg") == 2  # the history chart and the loss chart are both in the comparison
    assert render_html(report, history[::-1]) == page
    stale = _summary(report["cycle_id"], report["created_at"], "failed", 0.9)  # the current cycle, listed earlier
    assert render_html(report, [*history, stale]) == page
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([report, history]), encoding="utf-8")
    code = (
        "import json, sys; from flywheel.cycle.report.html import render_html; "
        "report, history = json.loads(open(sys.argv[1], encoding='utf-8').read()); "
        "sys.stdout.buffer.write(render_html(report, history).encode('utf-8'))"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "12345"}
    child = subprocess.run([sys.executable, "-c", code, str(inputs)], capture_output=True, env=env)
    assert child.returncode == 0, child.stderr.decode()[-2000:]
    assert child.stdout.decode("utf-8") == page
    # ... and it is a function of its inputs: another history is another chart.
    assert render_html(report, history[:1]) != page


def test_failed_report_with_most_fields_missing_still_renders(tmp_path: Path) -> None:
    report = {"cycle_id": "c-failed", "decision": "failed", "error": f"Traceback: boom {XSS}\n  line 2"}
    page = (write_report(tmp_path, report) / "report.html").read_text()
    assert 'class="badge badge-failed">failed<' in page
    assert "Traceback: boom &lt;script&gt;" in page and XSS not in page
    assert "No metrics were measured" in page and "No training ran" in page
    assert 'id="loss-chart-nodata"' in page and 'id="history-chart-nodata"' in page
    assert "<svg" not in page
    assert load_report(tmp_path, "c-failed") == report


def test_rejected_before_reembedding_shows_not_measured() -> None:
    report = make_report(decision="rejected", candidate="v2", serving_after="v1")
    for name in ("ndcg@10", "mrr@10", "recall@10"):
        report["metrics"]["retrieval"][name].update(candidate=None, delta=None, ci95=None)
    report["training"]["loss_curve"] = []
    page = render_html(report, [])
    assert 'class="badge badge-rejected">rejected<' in page
    assert page.count("not measured") >= 3
    assert 'id="loss-chart-nodata"' in page
    report["metrics"]["retrieval"] = None  # how the cycle stores a candidate that was never re-embedded
    assert "<td>retrieval (nDCG, MRR, Recall@10)</td><td>not measured</td>" in render_html(report, [])


def test_malformed_fields_do_not_break_rendering() -> None:
    report = make_report(
        decision=XSS,
        reasons="a single reason",
        checks=[{"name": "x", "passed": [1]}],
        counts={"events": "many"},
        examples=[{"query": "q", "relevant": "d1", "after": "oops"}],
    )
    report["training"]["loss_curve"] = [[1], "x", [2, "nan"], [3, 0.5]]
    page = render_html(report, [{"cycle_id": "c0", "created_at": None}])
    assert "badge-other" in page and XSS not in page
    assert "<li>a single reason</li>" in page
    assert 'id="loss-chart"' in page


def test_reads_the_metric_layouts_the_cycle_writes(tmp_path: Path) -> None:
    report = make_report()
    pair = report["metrics"]["pair_error"]
    pair["delta_error"], pair["delta_ci95"] = pair.pop("delta")["mean"], [-0.05, -0.028]  # compare_pair_error keys
    pair["relative_error_reduction"] = pair.pop("relative_reduction")
    retrieval = report["metrics"]["retrieval"]
    names = ("ndcg@10", "mrr@10", "recall@10")
    retrieval["incumbent"] = {m: retrieval[m]["incumbent"] for m in names}  # compare_retrieval's layout as well
    retrieval["candidate"] = {m: retrieval[m]["candidate"] for m in names}
    retrieval["delta"] = {m: {"mean": retrieval[m]["delta"], "ci95": retrieval[m]["ci95"]} for m in names}
    page = (write_report(tmp_path, report) / "report.html").read_text()
    assert "-3.9 pt (95% CI -5.0..-2.8)" in page and "17.7% of the mistakes avoided" in page
    assert (
        page.count("<td>unseen queries: nDCG@10</td>") == 1
        and "<td>delta</td>" not in page
        and "<td>incumbent</td>" not in page
    )
    assert list_reports(tmp_path)[0]["error_candidate"] == 0.181


def test_onnx_section_shows_backends_and_the_int8_verdict() -> None:
    onnx = {
        "requested": {"query": "onnx-int8", "bulk": "onnx-int8"},
        "serving": {"query": "onnx", "bulk": "onnx"},
        "guard": {"passed": False, "reason": "error +0.53 pt > 0.50 pt <b>", "data": "cycle held-out pairs"},
        "parity": {"max_abs_diff": 1e-6},
    }
    page = render_html(make_report(onnx=onnx), [])
    assert "<h2>Encoders (ONNX Runtime)</h2>" in page
    assert "query onnx-int8, corpus onnx-int8" in page and "query onnx, corpus onnx" in page
    assert "refused: error +0.53 pt &gt; 0.50 pt &lt;b&gt; (on cycle held-out pairs)" in page
    assert "max_abs_diff" in page
    assert "Encoders (ONNX Runtime)" not in render_html(make_report(), [])


@pytest.mark.parametrize(
    ("decision", "badge"), [("promoted", "promoted"), ("rejected", "rejected"), ("failed", "failed")]
)
def test_the_verdict_is_in_the_title_the_badge_and_the_gate_table(decision: str, badge: str) -> None:
    page = render_html(make_report(decision=decision), [])
    assert f"<title>flywheel cycle c20261127T201500-ab12: {decision}</title>" in page
    assert f'<span class="badge badge-{badge}">{decision}</span>' in page
    assert '<tr><td>error_rate_improvement</td><td><span class="ok">✓</span></td><td>-3.9 pt</td></tr>' in page
    assert '<tr><td>golden_set</td><td><span class="bad">✗</span></td><td>golden set missing</td></tr>' in page
    assert "incumbent v1 → candidate v2 · serving after: v2" in page


def test_the_metric_count_and_timing_tables_carry_the_reports_numbers() -> None:
    page = render_html(make_report(), [])
    rows = [
        "<tr><td>held-out pairs: error rate</td><td>22.0% (95% CI 20.0%..24.0%)</td>"
        "<td>18.1% (95% CI 16.0%..20.0%)</td><td>-3.9 pt (95% CI -5.0..-2.8)</td></tr>",
        "<tr><td>held-out pairs: relative reduction</td><td></td><td></td><td>17.7% of the mistakes avoided</td></tr>",
        "<tr><td>held-out pairs: ROC AUC</td><td>0.850</td><td>0.880</td><td>+0.030</td></tr>",
        "<tr><td>held-out pairs: n</td><td>500</td><td>500</td><td></td></tr>",
        "<tr><td>unseen queries: nDCG@10</td><td>0.610</td><td>0.660</td><td>+0.050 (95% CI 0.030..0.070)</td></tr>",
        "<tr><td>unseen queries: MRR@10</td><td>0.550</td><td>0.600</td><td>+0.050 (95% CI 0.020..0.080)</td></tr>",
        "<tr><td>unseen queries: Recall@10</td><td>0.800</td><td>0.840</td><td>+0.040 (95% CI 0.010..0.070)</td></tr>",
        "<tr><td>unseen queries: searches</td><td>120</td><td></td><td></td></tr>",
        "<tr><td>feedback events</td><td>1,234</td></tr>",
        "<tr><td>held-out queries</td><td>40</td></tr>",
        "<tr><td>train</td><td>2 min 0.5 s</td></tr>",
        "<tr><td>swap</td><td>0.01 s</td></tr>",
        "<tr><td>total</td><td>2 min 41.2 s</td></tr>",  # 0.4 + 120.5 + 10.2 + 30.1 + 0.01
        "<tr><td>lr</td><td>2e-05</td></tr>",
    ]
    for row in rows:
        assert row in page, row
    # Other numbers, other page: the table shows the report it is given.
    worse = make_report()
    worse["metrics"]["pair_error"]["candidate"].update(error_rate=0.25, ci95=[0.23, 0.27])
    worse["metrics"]["pair_error"]["delta"] = {"mean": 0.03, "ci95": [0.02, 0.04]}
    worse["metrics"]["pair_error"]["relative_reduction"] = -0.136
    page = render_html(worse, [])
    assert "<td>25.0% (95% CI 23.0%..27.0%)</td><td>+3.0 pt (95% CI 2.0..4.0)</td>" in page
    assert "<td>13.6% more mistakes</td>" in page and "<td>18.1%" not in page


def _set_reason(r: dict) -> None:
    r["reasons"] = [XSS]


def _set_check(r: dict) -> None:
    r["checks"] = [{"name": XSS, "passed": False, "detail": XSS}]


def _set_example(r: dict) -> None:
    r["examples"] = [{"query": XSS, "relevant": [XSS], "after": [{"doc_id": XSS, "text": XSS}]}]


def _set_versions(r: dict) -> None:
    r.update(incumbent=XSS, candidate=XSS, serving_after=XSS, kind=XSS, window={"start": XSS, "end": XSS})


def _set_counts_and_timings(r: dict) -> None:
    r["counts"] = {XSS: XSS}
    r["timings"] = {XSS: 1.0}


def _set_training(r: dict) -> None:
    r["training"].update(device=XSS, stop_reason=XSS, stopped_early=True, hyperparameters={XSS: XSS})


def _set_onnx(r: dict) -> None:
    r["onnx"] = {"requested": {"query": XSS, "bulk": XSS}, "guard": {"passed": False, "reason": XSS, "data": XSS}}


def _set_retrieval_name(r: dict) -> None:
    r["metrics"]["retrieval"][XSS] = {"incumbent": 0.1, "candidate": 0.2, "delta": 0.1}


@pytest.mark.parametrize(
    "put_xss",
    [
        _set_reason,
        _set_check,
        _set_example,
        _set_versions,
        _set_counts_and_timings,
        _set_training,
        _set_onnx,
        _set_retrieval_name,
    ],
)
def test_every_user_string_is_escaped(put_xss) -> None:
    report = make_report(examples=[])
    put_xss(report)
    page = render_html(report, [])
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_examples_tick_relevant_hits_shorten_long_texts_and_show_at_most_twenty() -> None:
    long_text = "python " * 60  # 420 characters
    examples = [
        {
            "query": f"query {i}",
            "relevant": ["d1"],
            "before": [{"doc_id": "d3", "text": "lose weight fast"}],
            "after": [{"doc_id": "d1", "text": long_text}],
        }
        for i in range(25)
    ]
    page = render_html(make_report(examples=examples), [])
    assert '<li class="hit"><span class="ok">✓</span> <code>d1</code> ' + long_text[:299] + "…</li>" in page
    assert "<li><code>d3</code> lose weight fast</li>" in page
    assert page.count('<div class="example">') == 20 and "<h3>query 19</h3>" in page and "query 20<" not in page
    assert '<p class="note">Showing 20 of 25 examples.</p>' in page
    assert '<p class="note">relevant: d1</p>' in page


def test_online_section_shows_the_test_its_chart_and_escapes_the_reason() -> None:
    series = [
        {"searches": n, "wins": w, "losses": lost, "ties": 0, "win_share": w / (w + lost), "band": [lo, hi]}
        for n, w, lost, lo, hi in [(100, 12, 8, 0.3, 0.85), (200, 30, 14, 0.45, 0.8), (300, 48, 20, 0.52, 0.8)]
    ]
    online = {
        "mode": "interleave",
        "challenger": "v2",
        "searches": 300,
        "wins": 48,
        "losses": 20,
        "ties": 3,
        "win_share": 48 / 68,
        "band": [0.52, 0.8],
        "decision": "promote",
        "reason": f"users preferred the candidate {XSS}",
        "series": series,
    }
    page = render_html({**make_report(), "online": online}, [])
    section = page[page.index("<h2>Online test</h2>") :]
    assert 'id="online-chart"' in section and "<svg" in section
    assert "[0.520, 0.800]" in section and "0.706" in section and "lists the candidate won" in section
    assert XSS not in page
    shadow = render_html({**make_report(), "online": {"mode": "shadow", "searches": 40, "top3_changed": 0.18}}, [])
    part = shadow[shadow.index("<h2>Online test</h2>") :]
    assert "18%" in part and "<svg" not in part[: part.index("</section>")]  # no win share to draw
