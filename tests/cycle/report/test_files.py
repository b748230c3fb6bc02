"""Report files: atomic JSON + HTML per cycle, strict JSON, safe ids, listing newest first, NotFound for the rest."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from flywheel.cycle.report.files import list_reports, load_report, report_html_path, write_report
from flywheel.errors import NotFound
from tests.helpers.factories import make_report


def test_write_report_creates_both_files_and_round_trips(tmp_path: Path) -> None:
    report = make_report()
    folder = write_report(tmp_path, report)
    assert folder == tmp_path / report["cycle_id"]
    assert (folder / "report.html").is_file()
    assert json.loads((folder / "report.json").read_text(encoding="utf-8")) == report
    assert load_report(tmp_path, report["cycle_id"]) == report
    assert report_html_path(tmp_path, report["cycle_id"]) == folder / "report.html"
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # no leftovers of the atomic writes


def test_write_report_overwrites_and_stores_strict_json(tmp_path: Path) -> None:
    report = make_report()
    write_report(tmp_path, report)
    report["metrics"]["pair_error"]["incumbent"]["roc_auc"] = math.nan
    report["window"] = {"start": ("a", "b"), "end": None}
    write_report(tmp_path, report)

    def reject(constant: str) -> None:
        raise AssertionError(f"non-standard JSON constant {constant}")

    stored = json.loads((tmp_path / report["cycle_id"] / "report.json").read_text(), parse_constant=reject)
    assert stored["metrics"]["pair_error"]["incumbent"]["roc_auc"] is None
    assert stored["window"]["start"] == ["a", "b"]
    assert math.isnan(report["metrics"]["pair_error"]["incumbent"]["roc_auc"])  # the caller's dict is untouched


@pytest.mark.parametrize("bad", ["../etc", "", "a/b", "x" * 65, "ok\n", None])
def test_write_report_rejects_unsafe_cycle_ids(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match="cycle_id"):
        write_report(tmp_path, make_report(cycle_id=bad))
    assert list(tmp_path.iterdir()) == []


def test_history_chart_appears_once_there_are_two_reports(tmp_path: Path) -> None:
    first = write_report(tmp_path, make_report("c1", "2026-11-20T00:00:00+00:00", "rejected"))
    assert 'id="history-chart"' not in (first / "report.html").read_text()
    second = write_report(tmp_path, make_report("c2", "2026-11-27T00:00:00+00:00", "promoted"))
    page = (second / "report.html").read_text()
    assert 'id="history-chart"' in page and 'id="history-chart-nodata"' not in page
    assert re.search(r'<figure id="history-chart"><svg', page)


def test_list_reports_newest_first_and_skips_unreadable_folders(tmp_path: Path) -> None:
    write_report(tmp_path, make_report("c-mid", "2026-11-21T00:00:00+00:00", "rejected", candidate=None))
    write_report(tmp_path, make_report("c-new", "2026-11-22T09:00:00+02:00"))
    write_report(tmp_path, make_report("c-old", "2026-11-20T00:00:00+00:00", "failed", metrics=None))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "report.json").write_text("{not json", encoding="utf-8")
    (tmp_path / "empty").mkdir()
    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "report.json").write_text("[1, 2]", encoding="utf-8")
    (tmp_path / "stray.txt").write_text("x", encoding="utf-8")

    summaries = list_reports(tmp_path)
    assert [s["cycle_id"] for s in summaries] == ["c-new", "c-mid", "c-old"]
    assert summaries[0] == {
        "cycle_id": "c-new",
        "created_at": "2026-11-22T09:00:00+02:00",
        "decision": "promoted",
        "kind": "full",
        "incumbent": "v1",
        "candidate": "v2",
        "error_incumbent": 0.22,
        "error_candidate": 0.181,
        "ndcg_incumbent": 0.61,
        "ndcg_candidate": 0.66,
    }
    assert summaries[2]["error_incumbent"] is None and summaries[2]["decision"] == "failed"
    assert list_reports(tmp_path / "missing") == []


@pytest.mark.parametrize("bad", ["nope", "../etc", "..", "a/b", "x" * 65, "c1\n", "", "corrupt"])
def test_load_report_and_html_path_raise_not_found(tmp_path: Path, bad: str) -> None:
    reports = tmp_path / "reports"
    write_report(reports, make_report("c1"))
    (reports / "corrupt").mkdir()
    (reports / "corrupt" / "report.json").write_text("{", encoding="utf-8")
    (tmp_path / "etc").mkdir()
    for name in ("report.json", "report.html"):  # what a path traversal to ../etc would find
        (tmp_path / "etc" / name).write_text("{}", encoding="utf-8")
    with pytest.raises(NotFound):
        load_report(reports, bad)
    if bad != "corrupt":
        with pytest.raises(NotFound):
            report_html_path(reports, bad)
