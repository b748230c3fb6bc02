"""Promotion-report routes: summaries, one report.json, and its HTML page for review (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

from flywheel.api.deps import AdminKey, SettingsDep
from flywheel.api.schemas import JSON_ERRORS
from flywheel.cycle.report.files import list_reports, load_report, report_html_path

router = APIRouter()


@router.get("/reports", dependencies=[AdminKey], tags=["reports"])
def get_reports(settings: SettingsDep) -> list[dict[str, Any]]:
    """Promotion reports, newest first (summaries)."""
    return list_reports(settings.reports_dir)


@router.get("/reports/{cycle_id}", dependencies=[AdminKey], tags=["reports"])
def get_report(cycle_id: str, settings: SettingsDep) -> dict[str, Any]:
    """One report.json: decision, reasons, metrics with CIs, counts, training, examples."""
    return load_report(settings.reports_dir, cycle_id)


@router.get(
    "/reports/{cycle_id}/html",
    response_class=HTMLResponse,
    dependencies=[AdminKey],
    tags=["reports"],
    responses=JSON_ERRORS,  # the page is HTML; its errors are JSON like everywhere else
)
def get_report_html(cycle_id: str, settings: SettingsDep) -> HTMLResponse:
    """The self-contained HTML report for a person to review."""
    return HTMLResponse(report_html_path(settings.reports_dir, cycle_id).read_text(encoding="utf-8"))
