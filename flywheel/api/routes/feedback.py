"""The feedback route: clicks and skips on shown hits, all-or-nothing per batch, counted in the metrics."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import MetricsDep, SearchKey, ServiceDep, SettingsDep
from flywheel.api.schemas import FeedbackIn, FeedbackOut
from flywheel.config import Settings
from flywheel.errors import FlywheelError, InvalidInput, PayloadTooLarge
from flywheel.serve.service import Service
from flywheel.types import Event

router = APIRouter()


@router.post("/feedback", response_model=FeedbackOut, dependencies=[SearchKey], tags=["search"])
def feedback(body: FeedbackIn, svc: ServiceDep, settings: SettingsDep, metrics: MetricsDep) -> FeedbackOut:
    """Record clicks and skips; all-or-nothing per batch, idempotent by event_id."""
    try:
        accepted, duplicates = store_feedback(settings, body, svc)
    except FlywheelError:
        metrics.observe_rejected(len(body.events))
        raise
    metrics.observe_feedback(accepted, duplicates)
    return FeedbackOut(accepted=accepted, duplicates=duplicates)


def store_feedback(settings: Settings, body: FeedbackIn, svc: Service) -> tuple[int, int]:
    """Apply the limits to a feedback batch and store it; returns (accepted, duplicates)."""
    if not body.events:
        raise InvalidInput("events must not be empty")
    if len(body.events) > settings.max_events_per_request:
        raise PayloadTooLarge(
            f"{len(body.events)} events in one request; the limit is {settings.max_events_per_request}"
        )
    for i, e in enumerate(body.events):
        for name in ("event_id", "search_id", "doc_id"):
            if len(getattr(e, name)) > settings.max_id_chars:
                raise InvalidInput(f"events[{i}].{name} is over {settings.max_id_chars} characters")
    events = [Event(e.event_id, e.search_id, e.doc_id, e.type, e.ts) for e in body.events]
    return svc.feedback(events)
