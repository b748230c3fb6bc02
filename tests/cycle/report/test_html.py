"""The HTML page of a report: self-contained, escaped, formatted, and robust to missing or malformed fields."""

from __future__ import annotations

import re
from pathlib import Path

from flywheel.cycle.report.files import list_reports, load_report, report_html_path, write_report
from flywheel.cycle.report.html import render_html
from tests.helpers.factories import XSS, make_report


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


def test_render_html_is_deterministic() -> None:
    report, other = make_report(), make_report(cycle_id="c0", created_at="2026-11-20T00:00:00+00:00")
    history = list_reports(Path("/nonexistent")) + [
        {
            "cycle_id": "c0",
            "created_at": other["created_at"],
            "decision": "rejected",
            "error_incumbent": 0.23,
            "error_candidate": 0.24,
            "ndcg_incumbent": 0.6,
            "ndcg_candidate": None,
        }
    ]
    assert render_html(report, history) == render_html(report, history)


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
    assert page.count("<td>nDCG@10</td>") == 1 and "<td>delta</td>" not in page and "<td>incumbent</td>" not in page
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
