"""OpenSearch User Behavior Insights (UBI) events as flywheel feedback: the mapping, its checks, and the write.

A UBI client sends the `search_id` that `POST /search` answered as its `query_id`, the hit's `doc_id` as
`event_attributes.object.object_id` and optionally its 1-based rank as `event_attributes.position.ordinal`.
Action names the settings map (`ubi_actions`) become feedback events; any other action (an impression, a page
view, a hover) is not feedback and is counted as ignored. Events carry no id of their own in UBI, so each gets
one derived from its content: a re-sent event is a duplicate, never a second click.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from flywheel.errors import Conflict, InvalidInput
from flywheel.serve.service import Service
from flywheel.types import Event
from flywheel.util.files import to_utc_naive


@dataclass(frozen=True)
class UbiEvent:
    """The parts of one UBI event that flywheel reads (everything else in it is ignored)."""

    action_name: str
    timestamp: datetime
    query_id: str | None = None
    object_id: str | None = None
    ordinal: int | None = None
    client_id: str | None = None


@dataclass
class UbiResult:
    """What a batch of UBI events came to: stored, already stored, and ignored (by action name)."""

    accepted: int = 0
    duplicates: int = 0
    ignored: Counter[str] = field(default_factory=Counter)


def ubi_event_id(event: UbiEvent) -> str:
    """A deterministic event id from an event's content (query, object, action, time, client): sending the same
    event again gives the same id, so the store counts it as a duplicate."""
    ts = to_utc_naive(event.timestamp)
    parts = [event.query_id, event.object_id, event.action_name, ts.isoformat() if ts else None, event.client_id]
    digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8", "surrogatepass")).hexdigest()
    return f"ubi-{digest[:32]}"


def ingest_ubi(service: Service, events: list[UbiEvent], actions: dict[str, str]) -> UbiResult:
    """Map UBI events onto feedback, check them against what flywheel showed, and store them all or none.

    Args:
        service: the open Service.
        events: the batch, in request order.
        actions: UBI action name -> feedback type (click, skip, thumbs_up, thumbs_down).

    Returns:
        The counts of the batch.

    Raises:
        InvalidInput: some mapped event lacks a query_id or object_id, names a query flywheel did not serve, an
            object that search did not show, or an ordinal other than the rank it was shown at; the message
            names each such event and nothing is written.
        Conflict: a derived id was stored before for other content (see `Store.add_events`).
    """
    result = UbiResult()
    problems: list[str] = []
    mapped: list[tuple[int, UbiEvent, str]] = []
    for i, event in enumerate(events):
        kind = actions.get(event.action_name)
        if kind is None:
            result.ignored[event.action_name] += 1
        elif not event.query_id:
            problems.append(
                f"events[{i}] ({event.action_name}): query_id is missing; send the search_id that POST /search answered"
            )
        elif event.object_id is None:
            problems.append(
                f"events[{i}] ({event.action_name}): event_attributes.object.object_id is missing; "
                "send the doc_id of the hit acted on"
            )
        else:
            mapped.append((i, event, kind))
    shown = service.store.shown_ranks({e.query_id for _, e, _ in mapped if e.query_id})
    for i, event, _ in mapped:
        problem = _check(event, shown.get(event.query_id or ""))
        if problem:
            problems.append(f"events[{i}] ({event.action_name}): {problem}")
    if problems:
        raise InvalidInput("batch rejected, nothing was stored: " + "; ".join(problems[:20]))
    feedback = [Event(ubi_event_id(e), e.query_id or "", e.object_id or "", kind, e.timestamp) for _, e, kind in mapped]
    if feedback:
        result.accepted, result.duplicates = service.feedback(feedback)
    return result


@dataclass(frozen=True)
class UbiQuery:
    """A UBI query record: a search another engine answered, and the hits it showed (best first)."""

    query_id: str
    user_query: str
    hit_ids: list[str]
    client_id: str | None = None


def ingest_ubi_queries(service: Service, queries: list[UbiQuery]) -> tuple[int, int]:
    """Log searches another engine answered, with their hits, so their UBI events can be taken as feedback.

    A query_id sent again with the same hits is a duplicate; with other hits, or one flywheel answered itself, a
    conflict. Every hit must be a stored document (a click on an unknown document could not be trained on).

    Returns:
        (searches stored, duplicates).

    Raises:
        InvalidInput: a query repeats a hit or names documents flywheel does not hold; nothing is written.
        Conflict: a query_id is already logged with other hits; nothing is written.
    """
    problems: list[str] = []
    conflicts: list[str] = []
    first: dict[str, int] = {}
    doc_ids = sorted({d for q in queries for d in q.hit_ids})
    known = set(service.store.document_texts(doc_ids)) if doc_ids else set()
    logged = service.store.shown_ranks({q.query_id for q in queries})
    new: list[UbiQuery] = []
    duplicates = 0
    for i, query in enumerate(queries):
        ranks = {d: r for r, d in reversed(list(enumerate(query.hit_ids, start=1)))}
        if len(ranks) != len(query.hit_ids):
            problems.append(f"queries[{i}] ({query.query_id!r}): a hit id appears twice in query_response_hit_ids")
            continue
        missing = [d for d in query.hit_ids if d not in known]
        if missing:
            problems.append(f"queries[{i}] ({query.query_id!r}): unknown doc_id(s) {', '.join(map(repr, missing[:5]))}")
            continue
        earlier = first.setdefault(query.query_id, i)
        previous = logged.get(query.query_id)
        if earlier != i:
            same = queries[earlier].hit_ids == query.hit_ids
            if not same:
                conflicts.append(
                    f"queries[{i}] ({query.query_id!r}): queries[{earlier}] has the same query_id and other hits"
                )
            duplicates += same
        elif previous is not None:
            if previous != ranks:
                conflicts.append(f"queries[{i}] ({query.query_id!r}): this query_id is already logged with other hits")
            duplicates += previous == ranks
        else:
            new.append(query)
    if problems:
        raise InvalidInput("batch rejected, nothing was stored: " + "; ".join(problems[:20]))
    if conflicts:
        raise Conflict("batch rejected, nothing was stored: " + "; ".join(conflicts[:20]))
    service.store.log_external_searches([(q.query_id, q.user_query, q.client_id, q.hit_ids) for q in new])
    return len(new), duplicates


def _check(event: UbiEvent, ranks: dict[str, int] | None) -> str | None:
    """What is wrong with a mapped event given the ranks its search showed (None: flywheel never served it)."""
    if ranks is None:
        return (
            f"query_id {event.query_id!r} is not a search flywheel knows; send the search_id of the POST /search "
            "answer as query_id, or first POST /ubi/queries with the hits that query showed (flywheel learns only "
            "from lists whose shown results it knows)"
        )
    if event.object_id not in ranks:
        return f"object_id {event.object_id!r} was not shown in search {event.query_id!r}"
    if event.ordinal is not None and event.ordinal != ranks[event.object_id]:
        return (
            f"position.ordinal {event.ordinal} but {event.object_id!r} was shown at rank {ranks[event.object_id]} "
            "(ordinals count from 1)"
        )
    return None


__all__ = ["UbiEvent", "UbiQuery", "UbiResult", "ingest_ubi", "ingest_ubi_queries", "ubi_event_id"]
