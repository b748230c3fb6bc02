"""The UBI route: OpenSearch User Behavior Insights events, stored as feedback with the same rules as /feedback."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import MetricsDep, SearchKey, ServiceDep, SettingsDep
from flywheel.api.ubi_schemas import UbiEventIn, UbiEventsIn, UbiOut
from flywheel.errors import FlywheelError, InvalidInput, PayloadTooLarge
from flywheel.serve.ubi import UbiEvent, ingest_ubi

router = APIRouter()


@router.post("/ubi/events", response_model=UbiOut, dependencies=[SearchKey], tags=["search"])
def ubi_events(body: UbiEventsIn, svc: ServiceDep, settings: SettingsDep, metrics: MetricsDep) -> UbiOut:
    """Record UBI events (one, or an array) as feedback; all-or-nothing per batch, idempotent by content."""
    events = body.events
    try:
        if not events:
            raise InvalidInput("the array of events must not be empty")
        if len(events) > settings.max_events_per_request:
            raise PayloadTooLarge(
                f"{len(events)} events in one request; the limit is {settings.max_events_per_request}"
            )
        result = ingest_ubi(
            svc, [_read(i, e, settings.max_id_chars) for i, e in enumerate(events)], settings.ubi_actions
        )
    except FlywheelError:
        metrics.observe_rejected(len(events))
        raise
    metrics.observe_feedback(result.accepted, result.duplicates)
    ignored = dict(sorted(result.ignored.items()))
    return UbiOut(
        accepted=result.accepted, duplicates=result.duplicates, ignored=sum(ignored.values()), ignored_actions=ignored
    )


def _read(i: int, event: UbiEventIn, max_id_chars: int) -> UbiEvent:
    """The parts flywheel reads, with the id length limit of /feedback."""
    read = UbiEvent(event.action_name, event.timestamp, event.query_id, event.object_id, event.ordinal, event.client_id)
    for name in ("query_id", "object_id", "client_id"):
        value = getattr(read, name)
        if value is not None and len(value) > max_id_chars:
            raise InvalidInput(f"events[{i}].{name} is over {max_id_chars} characters")
    return read
