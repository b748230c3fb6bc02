"""The cycles' side of the DuckDB store: cycle records, the single-flight lock, and the feedback reads mining needs.

Together with `flywheel.serve.store` this is the only place SQL is written (a test checks it): the cycle code
above asks for records and rows by meaning, never by query text.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flywheel.errors import Conflict, NotFound
from flywheel.serve.store import Store
from flywheel.util.files import utcnow

CYCLE_FIELDS = (
    "cycle_id",
    "trigger",
    "state",
    "stage",
    "started_at",
    "finished_at",
    "error",
    "incumbent",
    "candidate",
    "kind",
)
_SELECT = f"SELECT {', '.join(CYCLE_FIELDS)} FROM cycles"
_UPDATABLE = {*CYCLE_FIELDS, "window_end"} - {"cycle_id"}

# One row per (search, shown document) that carries a signal, with its positive and negative votes.
# Negatives: an explicit skip or thumbs_down, or shown above the lowest clicked result without a click.
_LABELLED_SQL = """
WITH ev AS (
    SELECT search_id, doc_id,
           count(*) FILTER (WHERE type IN ('click', 'thumbs_up')) AS pos,
           count(*) FILTER (WHERE type IN ('skip', 'thumbs_down')) AS neg
    FROM events WHERE received_at <= ? GROUP BY search_id, doc_id
), shown AS (
    SELECT s.search_id, s.query, s.ts, i.doc_id, i.rank, coalesce(ev.pos, 0) AS pos, coalesce(ev.neg, 0) AS neg
    FROM searches s
    JOIN impressions i ON i.search_id = s.search_id
    LEFT JOIN ev ON ev.search_id = i.search_id AND ev.doc_id = i.doc_id
    WHERE (? IS NULL OR s.ts >= ?)
      AND s.search_id IN (SELECT search_id FROM ev)
), lowest_click AS (
    SELECT search_id, max(rank) AS rank FROM shown WHERE pos > 0 GROUP BY search_id
)
SELECT sh.search_id, sh.query, sh.doc_id,
       (sh.pos > 0)::INTEGER AS positive,
       ((sh.neg > 0) OR (sh.pos = 0 AND lc.rank IS NOT NULL AND sh.rank < lc.rank))::INTEGER AS negative,
       sh.ts, sh.rank
FROM shown sh LEFT JOIN lowest_click lc ON lc.search_id = sh.search_id
WHERE sh.pos > 0 OR sh.neg > 0 OR (lc.rank IS NOT NULL AND sh.rank < lc.rank)
ORDER BY sh.ts, sh.search_id, sh.rank
"""


def labelled_rows(
    store: Store, end: datetime, start: datetime | None
) -> list[tuple[str, str, str, int, int, datetime, int]]:
    """(search_id, query, doc_id, positive, negative, search time, rank) per shown document with a signal,
    in time order.

    Args:
        store: the open store.
        end: only events received up to this time.
        start: only searches logged from this time (None: all).
    """
    return store.query(_LABELLED_SQL, [end, start, start])  # type: ignore[return-value]


_SHOWN_SQL = """
WITH clicked AS (
    SELECT search_id, doc_id FROM events
    WHERE received_at <= ? AND type IN ('click', 'thumbs_up') GROUP BY search_id, doc_id
)
SELECT s.search_id, s.query, i.doc_id, i.rank, (c.doc_id IS NOT NULL)::INTEGER AS clicked
FROM searches s
JOIN impressions i ON i.search_id = s.search_id
LEFT JOIN clicked c ON c.search_id = i.search_id AND c.doc_id = i.doc_id
WHERE s.ts < ? AND (? IS NULL OR s.ts >= ?) AND s.search_id IN (SELECT search_id FROM clicked)
ORDER BY s.ts, s.search_id, i.rank
"""


def shown_results(
    store: Store, end: datetime, before: datetime | None, start: datetime | None
) -> list[tuple[str, str, str, int, int]]:
    """(search_id, query, doc_id, rank, clicked) for every result shown in a search with a click: what a click
    model needs to estimate how often each rank is looked at.

    Args:
        store: the open store.
        end: only events received up to this time.
        before: only searches logged before this time (the start of the held-out next traffic; None: all).
        start: only searches logged from this time (None: all).
    """
    until = before or datetime(9999, 1, 1)
    return store.query(_SHOWN_SQL, [end, until, start, start])  # type: ignore[return-value]


def search_filters(store: Store, start: datetime | None) -> dict[str, dict[str, Any]]:
    """search_id -> the metadata filter a search applied, for every filtered search logged from `start` (None:
    all): what the cycle's evaluation re-applies, so each model is judged on the lists users could see."""
    rows = store.query(
        "SELECT search_id, filter FROM searches WHERE filter IS NOT NULL AND (? IS NULL OR ts >= ?)", [start, start]
    )
    return {search_id: json.loads(text) for search_id, text in rows}


def asked_counts(store: Store, since: datetime, limit: int) -> list[tuple[str, int]]:
    """(query text, searches) of the `limit` most asked query texts logged from `since`: where the serving
    side's count of repeated questions starts after a restart (`flywheel.scoring.exploration.AskCounts`)."""
    sql = "SELECT query, count(*) AS n FROM searches WHERE ts >= ? GROUP BY query ORDER BY n DESC, query LIMIT ?"
    return [(query, int(n)) for query, n in store.query(sql, [since, limit])]


def count_events(store: Store, end: datetime) -> int:
    """Events received up to `end`."""
    return int(store.query("SELECT count(*) FROM events WHERE received_at <= ?", [end])[0][0])


def count_new_signals(store: Store, since: datetime | None) -> int:
    """Distinct (search, document) signals received after `since`: the scheduler's "enough new data?" test."""
    sql = "SELECT count(*) FROM (SELECT DISTINCT search_id, doc_id FROM events WHERE received_at > ?)"
    return int(store.query(sql, [since or datetime(1970, 1, 1)])[0][0])


# --- online tests (interleaving and shadow): what each experiment's searches showed and earned --------------


def experiment_searches(store: Store, experiment: str, arm: str) -> list[tuple[str, datetime]]:
    """(search_id, time) of an experiment's searches in one arm, in time order."""
    return store.query(  # type: ignore[return-value]
        "SELECT search_id, ts FROM searches WHERE experiment = ? AND arm = ? ORDER BY ts, search_id",
        [experiment, arm],
    )


def experiment_feedback(store: Store, experiment: str) -> list[tuple[str, str, str, str]]:
    """(search_id, doc_id, team, event type) of every event on an experiment's interleaved lists."""
    return store.query(  # type: ignore[return-value]
        """
        SELECT i.search_id, i.doc_id, i.team, e.type
        FROM searches s
        JOIN impressions i ON i.search_id = s.search_id
        JOIN events e ON e.search_id = i.search_id AND e.doc_id = i.doc_id
        WHERE s.experiment = ? AND s.arm = 'interleaved' AND i.team IS NOT NULL
        """,
        [experiment],
    )


def shadow_rows(store: Store, experiment: str) -> list[tuple[str, int, int, list[str], list[str]]]:
    """(search_id, k, overlap@k, shown doc ids, the challenger's doc ids) of a shadow test's searches."""
    rows = store.query(
        """
        SELECT s.search_id, s.k, r.overlap, list(i.doc_id ORDER BY i.rank) AS shown, r.doc_ids
        FROM shadow_rankings r
        JOIN searches s ON s.search_id = r.search_id
        LEFT JOIN impressions i ON i.search_id = r.search_id
        WHERE r.experiment = ?
        GROUP BY s.search_id, s.k, r.overlap, r.doc_ids, s.ts
        ORDER BY s.ts
        """,
        [experiment],
    )
    return [(sid, k, ov, [d for d in shown if d is not None], json.loads(ids)) for sid, k, ov, shown, ids in rows]


# --- retention: the deletes of a gc run (flywheel.cycle.retention decides the cut-offs) ----------------------

# Searches a run deletes, with everything that hangs off them: older than the cut-off, and with no feedback that
# arrived after the last cycle's window (late feedback no cycle has seen keeps its search, so it is no orphan).
_DOOMED_SEARCHES = """
CREATE OR REPLACE TEMP TABLE _gc_searches AS
SELECT search_id FROM searches s
WHERE s.ts < ? AND NOT EXISTS (SELECT 1 FROM events e WHERE e.search_id = s.search_id AND e.received_at > ?)
"""
_IN_DOOMED = "search_id IN (SELECT search_id FROM _gc_searches)"
# Every logged vector but the newest per (query text, base version) among the searches that stay: the only one
# `Store.query_vectors` reads.
_SUPERSEDED_VECTORS = """
search_id IN (
    SELECT search_id FROM (
        SELECT search_id, row_number() OVER (PARTITION BY query, vector_version ORDER BY ts DESC, search_id DESC) AS n
        FROM searches WHERE query_vector IS NOT NULL AND search_id NOT IN (SELECT search_id FROM _gc_searches)
    ) WHERE n > 1)
"""


def trim_log(
    store: Store,
    searches_before: datetime | None,
    events_before: datetime | None,
    keep_searches_from: datetime,
    consumed_until: datetime | None,
    tombstones_before: datetime | None,
    dry_run: bool = False,
) -> dict[str, int]:
    """Delete (or with `dry_run` only count) what retention lets go of, in one transaction.

    Args:
        store: the open store.
        searches_before: delete searches logged before this, with their impressions, events and shadow
            rankings (None: none).
        events_before: also delete events received before this whose search stays (None: none).
        keep_searches_from: never touch a search logged from this time on, nor its events (a held-out window).
        consumed_until: end of the newest cycle window; events received later are kept, and so are their
            searches (None: no cycle has consumed anything, so no search or event is deleted).
        tombstones_before: delete document tombstones older than this (None: none).
        dry_run: count only.

    Returns:
        Rows deleted (or that would be) per table, and `query_vectors` nulled because a newer search of the
        same query text holds the vector cycles read.
    """
    never = datetime(1, 1, 1)
    if consumed_until is None:
        searches_before = events_before = None
    search_cut = min(searches_before, keep_searches_from) if searches_before else never
    event_cut = min(events_before, consumed_until) if events_before and consumed_until else never
    aged_events = (
        f"(received_at < ? AND search_id NOT IN (SELECT search_id FROM searches WHERE ts >= ?)) OR {_IN_DOOMED}"
    )
    plan: list[tuple[str, str, str, list[Any]]] = [  # (count as, table, condition, params): children first
        ("impressions", "impressions", _IN_DOOMED, []),
        ("events", "events", aged_events, [event_cut, keep_searches_from]),
        ("shadow_rankings", "shadow_rankings", _IN_DOOMED, []),
        ("searches", "searches", _IN_DOOMED, []),
        ("tombstones", "document_deletions", "deleted_at < ?", [tombstones_before or never]),
    ]
    counts: dict[str, int] = {}
    with store.transaction() as con:
        con.execute(_DOOMED_SEARCHES, [search_cut, consumed_until or never]).fetchall()
        try:
            for name, table, where, params in plan:
                counts[name] = int(con.execute(f"SELECT count(*) FROM {table} WHERE {where}", params).fetchall()[0][0])
                if name == "searches":  # the survivors' superseded vectors, counted before anything is deleted
                    sql = f"SELECT count(*) FROM searches WHERE {_SUPERSEDED_VECTORS}"
                    counts["query_vectors"] = int(con.execute(sql).fetchall()[0][0])
                    if not dry_run:
                        con.execute(f"UPDATE searches SET query_vector = NULL WHERE {_SUPERSEDED_VECTORS}").fetchall()
                if not dry_run and counts[name]:
                    con.execute(f"DELETE FROM {table} WHERE {where}", params).fetchall()
        finally:
            con.execute("DROP TABLE IF EXISTS _gc_searches").fetchall()
    if not dry_run and any(counts.values()):
        store.query("CHECKPOINT")  # the freed blocks become reusable now, not at the next restart
    return counts


def latest_mined_cycles(store: Store) -> list[tuple[str, str, datetime]]:
    """(cycle_id, kind, window_end) of the newest cycle of each kind that got past mining."""
    return store.query(  # type: ignore[return-value]
        "SELECT arg_max(cycle_id, window_end), coalesce(kind, 'full') AS k, max(window_end) FROM cycles "
        "WHERE state IN ('promoted', 'rejected') AND window_end IS NOT NULL GROUP BY k ORDER BY k"
    )


class CycleLedger:
    """Cycle records and the lock row that lets one cycle run at a time per data dir."""

    def __init__(self, store: Store, owner: str) -> None:
        """Args: store: the open store; owner: this process instance's id (a lock row of another is stale)."""
        self.store = store
        self.owner = owner

    def get(self, cycle_id: str) -> dict[str, Any]:
        """A cycle's record.

        Raises:
            NotFound: unknown cycle id.
        """
        rows = self.store.query(f"{_SELECT} WHERE cycle_id = ?", [cycle_id])
        if not rows:
            raise NotFound(f"cycle {cycle_id!r} does not exist")
        return _record(rows[0])

    def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent cycles, newest first."""
        return [_record(r) for r in self.store.query(f"{_SELECT} ORDER BY started_at DESC LIMIT ?", [limit])]

    def ids_in_state(self, *states: str) -> list[str]:
        """Ids of the cycles whose state is one of `states`."""
        marks = ", ".join("?" for _ in states)
        return [r[0] for r in self.store.query(f"SELECT cycle_id FROM cycles WHERE state IN ({marks})", list(states))]

    def last_window_end(self, kind: str | None = None) -> datetime | None:
        """End of the event window of the last cycle (of `kind`, if given) that got past mining."""
        sql = "SELECT max(window_end) FROM cycles WHERE state IN ('promoted', 'rejected')"
        if kind is None:
            rows = self.store.query(sql)
        else:  # rows from before migration 3 have no kind: they were full cycles
            rows = self.store.query(sql + " AND coalesce(kind, 'full') = ?", [kind])
        return rows[0][0] if rows else None

    def update(self, cycle_id: str, **fields: Any) -> None:
        """Set some fields of a cycle's record and refresh the lock's heartbeat."""
        unknown = set(fields) - _UPDATABLE
        if unknown:  # names go into the SQL text: only known columns
            raise ValueError(f"not cycle fields: {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in fields)
        with self.store.transaction() as con:
            con.execute(f"UPDATE cycles SET {assignments} WHERE cycle_id = ?", [*fields.values(), cycle_id]).fetchall()
            con.execute("UPDATE cycle_lock SET heartbeat_at = ? WHERE cycle_id = ?", [utcnow(), cycle_id]).fetchall()

    def acquire(self, cycle_id: str, trigger: str, kind: str, incumbent: str | None) -> None:
        """Take the lock row and record the cycle as queued, in one transaction.

        Raises:
            Conflict: a cycle is running in this process.
        """
        now = utcnow()
        with self.store.transaction() as con:
            held = con.execute("SELECT cycle_id, owner FROM cycle_lock WHERE id = 1").fetchall()
            if held and held[0][1] == self.owner:
                raise Conflict(f"cycle {held[0][0]} is running; wait for it (GET /cycles/{held[0][0]})")
            con.execute("DELETE FROM cycle_lock WHERE id = 1").fetchall()  # stale: its owner process is gone
            con.execute("INSERT INTO cycle_lock VALUES (1, ?, ?, ?, ?)", [cycle_id, self.owner, now, now]).fetchall()
            con.execute(
                "INSERT INTO cycles (cycle_id, trigger, state, stage, started_at, incumbent, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [cycle_id, trigger, "queued", None, now, incumbent, kind],
            ).fetchall()

    def release(self, cycle_id: str) -> None:
        """Drop the lock row of `cycle_id`."""
        with self.store.transaction() as con:
            con.execute("DELETE FROM cycle_lock WHERE cycle_id = ?", [cycle_id]).fetchall()

    def clear_lock(self) -> None:
        """Drop any lock row (start-up recovery: its owner is gone)."""
        with self.store.transaction() as con:
            con.execute("DELETE FROM cycle_lock").fetchall()

    def running(self) -> str | None:
        """The id of the cycle this process instance holds the lock for, if any."""
        rows = self.store.query("SELECT cycle_id FROM cycle_lock WHERE id = 1 AND owner = ?", [self.owner])
        return rows[0][0] if rows else None


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    record = dict(zip(CYCLE_FIELDS, row, strict=True))
    for key in ("started_at", "finished_at"):
        if record[key] is not None:
            record[key] = record[key].isoformat() + "Z"
    return record
