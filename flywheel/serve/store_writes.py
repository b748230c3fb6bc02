"""The store's batched writes: searches with their impressions, and feedback events, each in few statements.

Both run inside a transaction the `Store` opened (its lock held), on Arrow tables: a batch costs a fixed
handful of statements whatever its size, which is what makes batched ingest fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import pyarrow as pa

from flywheel.errors import Conflict, InvalidInput
from flywheel.types import Event, Impression
from flywheel.util.files import to_utc_naive


@dataclass(frozen=True)
class SearchRecord:
    """One answered search as it is logged: the searches row, its impressions and an optional shadow ranking."""

    search_id: str
    ts: datetime
    query: str
    k: int
    model_version: str
    impressions: list[Impression]
    user_id: str | None = None
    session_id: str | None = None
    query_vector: bytes | None = None  # float16 bytes (`store.encode_vector`)
    vector_version: str | None = None
    filter_json: str | None = None
    experiment: str | None = None
    arm: str | None = None
    shadow: tuple[list[str], int] | None = None


def insert_searches(con: duckdb.DuckDBPyConnection, records: list[SearchRecord]) -> None:
    """Insert searches, their impressions and shadow rankings: three appends whatever the batch size."""
    if not records:
        return
    searches = pa.table(
        {
            "search_id": [r.search_id for r in records],
            "ts": pa.array([r.ts for r in records], pa.timestamp("us")),
            "query": [r.query for r in records],
            "k": pa.array([r.k for r in records], pa.int32()),
            "model_version": [r.model_version for r in records],
            "user_id": pa.array([r.user_id for r in records], pa.string()),
            "session_id": pa.array([r.session_id for r in records], pa.string()),
            "query_vector": pa.array([r.query_vector for r in records], pa.binary()),
            "vector_version": pa.array([r.vector_version for r in records], pa.string()),
            "filter": pa.array([r.filter_json for r in records], pa.string()),
            "experiment": pa.array([r.experiment for r in records], pa.string()),
            "arm": pa.array([r.arm for r in records], pa.string()),
        }
    )
    shown = [(r.search_id, i) for r in records for i in r.impressions]
    impressions = pa.table(
        {
            "search_id": [s for s, _ in shown],
            "rank": pa.array([i.rank for _, i in shown], pa.int32()),
            "doc_id": [i.doc_id for _, i in shown],
            "score": pa.array([i.score for _, i in shown], pa.float64()),
            "team": pa.array([i.team for _, i in shown], pa.string()),
        }
    )
    shadows = [r for r in records if r.shadow is not None]
    # Appended as Arrow relations: no register/unregister and no JSON cast (`filter` is already JSON text the
    # store dumped), which took a flush of one search from ~6 to ~3.5 ms here. The columns are in the tables'
    # order (schema.py), which `insert_into` requires.
    con.from_arrow(searches).insert_into("searches")
    if shown:
        con.from_arrow(impressions).insert_into("impressions")
    if shadows:
        con.executemany(
            "INSERT INTO shadow_rankings VALUES (?, ?, ?, ?)",
            [[r.search_id, r.experiment, json.dumps(r.shadow[0], ensure_ascii=False), r.shadow[1]] for r in shadows],
        )


# For each event of the batch: does its search exist, was its document shown there, and the stored event of
# the same event_id if there is one. One read, whatever the batch size; the checks on it run in Python.
_CHECK_SQL = """
    WITH shown AS (  -- only the batch's searches: a semi-join, not every impression ever logged
        SELECT DISTINCT i.search_id, i.doc_id FROM impressions i
        WHERE i.search_id IN (SELECT search_id FROM _ev_batch)
    )
    SELECT b.idx, s.search_id IS NULL, sh.doc_id IS NULL, e.event_id IS NOT NULL,
           e.search_id, e.doc_id, e.type, e.ts, e.received_at
    FROM _ev_batch b
    LEFT JOIN searches s ON s.search_id = b.search_id
    LEFT JOIN shown sh ON sh.search_id = b.search_id AND sh.doc_id = b.doc_id
    LEFT JOIN events e ON e.event_id = b.event_id
    ORDER BY b.idx
"""


def insert_events(con: duckdb.DuckDBPyConnection, events: list[Event], now: datetime) -> tuple[int, int]:
    """Validate a batch of events and insert the new ones: one read and one append (see `Store.add_events`).

    Returns:
        (accepted, duplicates).

    Raises:
        InvalidInput: an unknown search or a document it did not show (nothing written).
        Conflict: an event_id reused for another event (nothing written).
    """
    times = [to_utc_naive(e.ts) or now for e in events]
    table = pa.table(
        {
            "idx": pa.array(range(len(events)), pa.int32()),
            "event_id": [e.event_id for e in events],
            "search_id": [e.search_id for e in events],
            "doc_id": [e.doc_id for e in events],
            "type": [e.type for e in events],
            "ts": pa.array(times, pa.timestamp("us")),
        }
    )
    con.register("_ev_batch", table)
    try:
        rows = con.execute(_CHECK_SQL).fetchall()
    finally:
        con.unregister("_ev_batch")
    bad = [(idx, no_search) for idx, no_search, not_shown, *_ in rows if no_search or not_shown]
    if bad:
        raise InvalidInput(_describe_bad_events(events, bad[:20]))
    conflicts: list[tuple[int, int | None, Event | tuple[str, str, str]]] = []
    earlier: dict[str, list[int]] = {}  # event_id -> indexes of its earlier copies in this batch
    new: list[int] = []
    for idx, _, _, stored, s_search, s_doc, s_type, s_ts, s_received in rows:
        event = events[idx]
        given = event.ts is not None
        if stored:
            # A stored event's ts equals its received_at exactly when the client gave none: an omitted ts
            # matches any, on either side.
            if (s_search, s_doc, s_type) != (event.search_id, event.doc_id, event.type) or (
                given and s_ts != s_received and s_ts != times[idx]
            ):
                conflicts.append((idx, None, (s_search, s_doc, s_type)))
            continue
        copies = earlier.setdefault(event.event_id, [])
        for first in copies:
            other = events[first]
            if (other.search_id, other.doc_id, other.type) != (event.search_id, event.doc_id, event.type) or (
                given and other.ts is not None and times[first] != times[idx]
            ):
                conflicts.append((idx, first, other))
        if not copies:
            new.append(idx)
        copies.append(idx)
    if conflicts:
        raise Conflict(_describe_conflicts(events, conflicts[:20]))
    if new:
        fresh = table.take(pa.array(new, pa.int32()))
        con.register("_ev_new", fresh)
        try:
            con.execute(
                "INSERT INTO events SELECT event_id, search_id, doc_id, type, ts, ? FROM _ev_new", [now]
            ).fetchall()
        finally:
            con.unregister("_ev_new")
    return len(new), len(events) - len(new)


def _describe_bad_events(events: list[Event], bad: list[tuple[int, bool]]) -> str:
    """One message naming every bad event (index in the batch, event_id, and what is wrong)."""
    parts = []
    for idx, no_search in bad:
        e = events[idx]
        why = (
            f"search_id {e.search_id!r} does not exist"
            if no_search
            else f"doc_id {e.doc_id!r} was not shown in search {e.search_id!r}"
        )
        parts.append(f"events[{idx}] (event_id {e.event_id!r}): {why}")
    return "batch rejected, nothing was stored: " + "; ".join(parts)


def _describe_conflicts(events: list[Event], rows: list[tuple[int, int | None, Any]]) -> str:
    """One message naming every event whose event_id was already used for another event."""
    parts = []
    for idx, first, other in rows:
        search_id, doc_id, type_ = (other.search_id, other.doc_id, other.type) if first is not None else other
        where = "was already stored" if first is None else f"is already used by events[{first}]"
        parts.append(
            f"events[{idx}] (event_id {events[idx].event_id!r}): this event_id {where} for another event "
            f"(search_id {search_id!r}, doc_id {doc_id!r}, type {type_!r})"
        )
    return (
        "batch rejected, nothing was stored: " + "; ".join(parts) + ". An event_id is an idempotency key: "
        "resend an event unchanged, and give each new event its own event_id"
    )


__all__ = ["SearchRecord", "insert_events", "insert_searches"]
