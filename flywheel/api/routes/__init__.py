"""The API's routers, one per noun, in the order `create_app` includes them."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.routes import cycles, documents, feedback, models, ops, reports, search, ubi

ROUTERS: list[APIRouter] = [
    documents.router,
    search.router,
    feedback.router,
    ubi.router,
    ops.router,
    models.router,
    cycles.router,
    reports.router,
]

__all__ = ["ROUTERS"]
