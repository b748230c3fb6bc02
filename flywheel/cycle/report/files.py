"""Promotion reports: one folder per retraining cycle, a JSON record plus a self-contained HTML page for review.

Layout::

    <reports_dir>/<cycle_id>/report.json   decision, reasons, gate checks, metrics, counts, training, examples
    <reports_dir>/<cycle_id>/report.html   the same for a person: inline CSS and SVG charts, nothing fetched
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.report.view import sort_key, summary_row
from flywheel.errors import NotFound

CYCLE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")  # always fullmatch: `$` would let a trailing newline through


def write_report(reports_dir: Path, report: CycleReport | dict[str, Any]) -> Path:
    """Write a cycle's report.json and report.html, each atomically, so a reviewer never sees half a report.

    The HTML is written first: list_reports keys on report.json, so every listed report has its page.

    Args:
        reports_dir: Folder with one sub-folder per cycle; created if missing. Its other reports feed the
            history chart.
        report: The cycle's report (not modified), or a stored report's JSON object to re-render; `cycle_id`
            must match ^[A-Za-z0-9_-]{1,64}$. NaN/inf are stored as null, numpy values as numbers, tuples as
            lists, other objects (datetime, Path) as str.

    Returns:
        The folder `<reports_dir>/<cycle_id>`.

    Raises:
        ValueError: The cycle_id is missing or not a safe folder name (a bug in the caller).
    """
    if isinstance(report, CycleReport):
        report = report.to_json()
    cycle_id = report.get("cycle_id")
    if not isinstance(cycle_id, str) or not CYCLE_ID_RE.fullmatch(cycle_id):
        raise ValueError(f"cycle_id must match ^[A-Za-z0-9_-]{{1,64}}$, got {cycle_id!r}")
    data = _jsonable(report)
    folder = Path(reports_dir) / cycle_id
    folder.mkdir(parents=True, exist_ok=True)
    history = [s for s in list_reports(reports_dir) if s["cycle_id"] != cycle_id]
    from flywheel.cycle.report.html import render_html  # matplotlib and the page builder: only when writing

    _write_atomic(folder / "report.html", render_html(data, history))
    _write_atomic(folder / "report.json", json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return folder


def list_reports(reports_dir: Path) -> list[dict[str, Any]]:
    """Summarise every readable report, newest first; folders without a valid report.json are skipped.

    Args:
        reports_dir: The reports folder (a missing folder means no reports).

    Returns:
        Dicts with cycle_id, created_at, decision, kind, incumbent, candidate, error_incumbent,
        error_candidate, ndcg_incumbent, ndcg_candidate (the metrics are floats or None).
    """
    reports_dir = Path(reports_dir)
    if not reports_dir.is_dir():
        return []
    summaries = []
    for folder in reports_dir.iterdir():
        if not CYCLE_ID_RE.fullmatch(folder.name) or not folder.is_dir():
            continue
        try:
            report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):  # missing, half-copied or hand-edited: the others must still list
            continue
        if isinstance(report, dict):
            summaries.append({**summary_row(report), "cycle_id": folder.name})  # the folder name is the address
    return sorted(summaries, key=sort_key, reverse=True)


def load_report(reports_dir: Path, cycle_id: str) -> dict[str, Any]:
    """Read one cycle's report.json.

    Args:
        reports_dir: The reports folder.
        cycle_id: The cycle's id, checked against ^[A-Za-z0-9_-]{1,64}$ so that no path escapes the folder.

    Returns:
        The report dict as stored.

    Raises:
        NotFound: The id is malformed or unknown, or its report.json is unreadable.
    """
    try:
        report = json.loads(_existing(reports_dir, cycle_id, "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # strerror, not str(exc): API clients need not see server paths
        raise NotFound(f"report {cycle_id} is unreadable: {exc.strerror if isinstance(exc, OSError) else exc}") from exc
    if not isinstance(report, dict):
        raise NotFound(f"report {cycle_id} is unreadable: not a JSON object")
    return report


def report_html_path(reports_dir: Path, cycle_id: str) -> Path:
    """Locate a cycle's report.html, e.g. for the API to serve.

    Args:
        reports_dir: The reports folder.
        cycle_id: The cycle's id (same rules as load_report).

    Returns:
        The path of an existing report.html.

    Raises:
        NotFound: The id is malformed or the page does not exist.
    """
    return _existing(reports_dir, cycle_id, "report.html")


def _existing(reports_dir: Path, cycle_id: Any, name: str) -> Path:
    """An existing file of a cycle; a malformed id names no report, so it cannot reach outside reports_dir."""
    path = Path(reports_dir) / str(cycle_id) / name
    if not isinstance(cycle_id, str) or not CYCLE_ID_RE.fullmatch(cycle_id) or not path.is_file():
        raise NotFound(f"report {cycle_id!r} not found")
    return path


def _write_atomic(path: Path, text: str) -> None:
    """Write text so readers see the old file or the new one (unique tmp, fsync, os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a web server running as another user must read the page
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value: Any) -> Any:
    """Strict-JSON values: NaN/inf become None (browsers reject NaN), numpy values and tuples become plain ones."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "dtype") and hasattr(value, "tolist"):  # numpy scalar or array, without importing numpy
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if value is None or isinstance(value, str | int | float) else str(value)
