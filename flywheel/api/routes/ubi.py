"""The UBI route: OpenSearch User Behavior Insights events, stored as feedback with the same rules as /feedback."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import MetricsDep, SearchKey, ServiceDep, SettingsDep
from flywheel.api.schemas import control_char
from flywheel.api.ubi_schemas import UbiEventIn, UbiEventsIn, UbiOut, UbiQueriesIn, UbiQueriesOut
from flywheel.errors import FlywheelError, InvalidInput, PayloadTooLarge
from flywheel.serve.ubi import UbiEvent, UbiQuery, ingest_ubi, ingest_ubi_queries

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


@router.post("/ubi/queries", response_model=UbiQueriesOut, dependencies=[SearchKey], tags=["search"])
def ubi_queries(body: UbiQueriesIn, svc: ServiceDep, settings: SettingsDep) -> UbiQueriesOut:
    """Log UBI queries another engine answered, with the hits they showed, so their UBI events become feedback."""
    queries = body.queries
    if not queries:
        raise InvalidInput("the array of queries must not be empty")
    if len(queries) > settings.max_events_per_request:
        raise PayloadTooLarge(f"{len(queries)} queries in one request; the limit is {settings.max_events_per_request}")
    read = []
    for i, query in enumerate(queries):
        hits = query.hit_ids
        if hits is None:
            raise InvalidInput(
                f"queries[{i}]: send the doc_ids of the hits shown, best first, as query_response_hit_ids"
            )
        if len(hits) > settings.max_k:
            raise InvalidInput(f"queries[{i}]: {len(hits)} hits; at most {settings.max_k} (max_k) are kept per search")
        if len(query.user_query) > settings.max_query_chars:
            raise InvalidInput(f"queries[{i}]: user_query is over {settings.max_query_chars} characters")
        if not query.user_query.strip() or control_char(query.user_query) is not None:
            raise InvalidInput(f"queries[{i}]: user_query must be plain, non-blank text")
        for name, value in (
            ("query_id", query.query_id),
            ("client_id", query.client_id),
            *(("hit id", h) for h in hits),
        ):
            if value is not None and len(value) > settings.max_id_chars:
                raise InvalidInput(f"queries[{i}].{name} is over {settings.max_id_chars} characters")
        read.append(UbiQuery(query.query_id, query.user_query, hits, query.client_id))
    stored, duplicates = ingest_ubi_queries(svc, read)
    return UbiQueriesOut(stored=stored, duplicates=duplicates)


def _read(i: int, event: UbiEventIn, max_id_chars: int) -> UbiEvent:
    """The parts flywheel reads, with the id length limit of /feedback."""
    read = UbiEvent(event.action_name, event.timestamp, event.query_id, event.object_id, event.ordinal, event.client_id)
    for name in ("query_id", "object_id", "client_id"):
        value = getattr(read, name)
        if value is not None and len(value) > max_id_chars:
            raise InvalidInput(f"events[{i}].{name} is over {max_id_chars} characters")
    return read
