"""Event store: documents, searches, impressions and feedback events in one DuckDB file.

The serving process owns the file (DuckDB allows one writer process). Writes go in as Arrow batches inside
one transaction each, so a request's rows are either all committed or none are, and a 2xx answer is only
sent after COMMIT (DuckDB's WAL makes a committed transaction survive `kill -9`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from flywheel.errors import Conflict, InvalidInput, NotFound, StoreLocked
from flywheel.serve.schema import MIGRATIONS
from flywheel.types import Document, Event, Impression
from flywheel.util.files import to_utc_naive, utcnow

EVENT_TYPES = ("click", "skip", "thumbs_up", "thumbs_down")
EXTERNAL_VERSION = "external"  # the model_version of a search another engine answered (UBI queries)


def _x(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    """Execute one statement and drain its result (DuckDB 2 refuses new work while a result is pending)."""
    return con.execute(sql, params or []).fetchall()


class Store:
    """The DuckDB event store; one instance per process, shared by threads behind a lock."""

    def __init__(self, path: Path | str) -> None:
        """Open (or create) the store and apply pending migrations.

        Args:
            path: the DuckDB file; ":memory:" works for throwaway use.

        Raises:
            StoreLocked: another process (usually `flywheel serve`) has the file open.
        """
        self.path = Path(path) if str(path) != ":memory:" else None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" in str(exc).lower():
                raise StoreLocked(
                    f"{path} is in use by another process (is `flywheel serve` running on this data dir?)"
                ) from exc
            raise
        self._lock = threading.RLock()
        self._migrate()

    def close(self) -> None:
        """Checkpoint and close the file."""
        with self._lock:
            self._con.close()

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction under the store lock; roll back on any exception."""
        with self._lock:
            _x(self._con, "BEGIN TRANSACTION")
            try:
                yield self._con
            except BaseException:
                _x(self._con, "ROLLBACK")
                raise
            _x(self._con, "COMMIT")

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a read-only SQL query and return all rows (for modules that mine the log)."""
        with self._lock:
            return _x(self._con, sql, params)

    def _migrate(self) -> None:
        with self._lock:
            _x(
                self._con,
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)",
            )
            done = {row[0] for row in _x(self._con, "SELECT version FROM schema_migrations")}
            for version, name, sql in MIGRATIONS:
                if version in done:
                    continue
                with self.transaction() as con:
                    _x(con, sql)
                    _x(con, "INSERT INTO schema_migrations VALUES (?, ?, ?)", [version, name, utcnow()])

    def schema_version(self) -> int:
        """The highest applied migration number."""
        return int(self.query("SELECT coalesce(max(version), 0) FROM schema_migrations")[0][0])

    # --- documents -------------------------------------------------------------------------------------

    def upsert_documents(self, con: duckdb.DuckDBPyConnection, docs: list[Document]) -> int:
        """Insert or replace documents by id inside the caller's transaction (last copy of an id wins).

        Args:
            con: the connection yielded by `transaction()`.
            docs: the documents.

        Returns:
            The number of distinct ids written.
        """
        latest = {d.id: d for d in docs}
        now = utcnow()
        table = pa.table(
            {
                "id": list(latest),
                "text": [d.text for d in latest.values()],
                "metadata": [json.dumps(d.metadata, ensure_ascii=False) for d in latest.values()],
                "updated_at": pa.array([now] * len(latest), pa.timestamp("us")),
            }
        )
        con.register("_docs_batch", table)
        try:
            _x(con, "DELETE FROM documents WHERE id IN (SELECT id FROM _docs_batch)")
            _x(con, "INSERT INTO documents SELECT id, text, metadata::JSON, updated_at FROM _docs_batch")
        finally:
            con.unregister("_docs_batch")
        return len(latest)

    def delete_document(self, con: duckdb.DuckDBPyConnection, doc_id: str) -> None:
        """Delete one document inside the caller's transaction, leaving a tombstone for re-embedding catch-up.

        Raises:
            NotFound: no document has this id.
        """
        if not _x(con, "SELECT 1 FROM documents WHERE id = ?", [doc_id]):
            raise NotFound(f"document {doc_id!r} does not exist")
        _x(con, "DELETE FROM documents WHERE id = ?", [doc_id])
        _x(con, "INSERT INTO document_deletions VALUES (?, ?)", [doc_id, utcnow()])

    def count_documents(self) -> int:
        """How many documents the corpus holds."""
        return int(self.query("SELECT count(*) FROM documents")[0][0])

    def document_texts(self, ids: list[str]) -> dict[str, str]:
        """Texts of these document ids (unknown ids are left out), for showing hits to a reviewer."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        return dict(self.query(f"SELECT id, text FROM documents WHERE id IN ({marks})", list(ids)))

    def iter_documents(self, batch_size: int = 512, changed_since: datetime | None = None) -> Iterator[list[Document]]:
        """Yield the corpus in id order, in batches (the source of truth for re-embedding).

        Args:
            batch_size: documents per batch.
            changed_since: only documents updated at or after this time.
        """
        last = ""
        while True:
            sql = "SELECT id, text, metadata FROM documents WHERE id > ?"
            params: list[Any] = [last]
            if changed_since is not None:
                sql += " AND updated_at >= ?"
                params.append(changed_since)
            rows = self.query(sql + " ORDER BY id LIMIT ?", [*params, batch_size])
            if not rows:
                return
            yield [Document(r[0], r[1], json.loads(r[2]) if r[2] else {}) for r in rows]
            last = rows[-1][0]

    def deleted_since(self, since: datetime) -> list[str]:
        """Ids deleted at or after `since` and not re-created since."""
        rows = self.query(
            "SELECT DISTINCT d.id FROM document_deletions d LEFT JOIN documents x ON x.id = d.id "
            "WHERE d.deleted_at >= ? AND x.id IS NULL",
            [since],
        )
        return [r[0] for r in rows]

    # --- searches and feedback -------------------------------------------------------------------------

    def log_search(
        self,
        search_id: str,
        query: str,
        k: int,
        model_version: str,
        impressions: list[Impression],
        user_id: str | None = None,
        session_id: str | None = None,
        query_vector: np.ndarray | None = None,
        vector_version: str | None = None,
        search_filter: dict[str, Any] | None = None,
        experiment: str | None = None,
        arm: str | None = None,
        shadow: tuple[list[str], int] | None = None,
    ) -> None:
        """Record one search and the hits it showed, in one transaction.

        Args:
            query_vector: the base model's query vector (before any adapter), kept as float16 for adapter cycles.
            vector_version: the base version that computed `query_vector`.
            search_filter: the metadata filter the search applied (stored as JSON).
            experiment: the online test's id (its cycle id) when one ran; `arm` says how this search took part.
            shadow: in a shadow test, (the challenger's doc ids, best first; their overlap with what was shown).
        """
        now = utcnow()
        blob = encode_vector(query_vector) if query_vector is not None else None
        filter_json = json.dumps(search_filter, sort_keys=True, ensure_ascii=False) if search_filter else None
        with self.transaction() as con:
            _x(
                con,
                "INSERT INTO searches (search_id, ts, query, k, model_version, user_id, session_id, query_vector, "
                "vector_version, filter, experiment, arm) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    *(search_id, now, query, k, model_version, user_id, session_id, blob, vector_version),
                    *(filter_json, experiment, arm),
                ],
            )
            if shadow is not None:
                _x(
                    con,
                    "INSERT INTO shadow_rankings VALUES (?, ?, ?, ?)",
                    [search_id, experiment, json.dumps(shadow[0], ensure_ascii=False), shadow[1]],
                )
            if impressions:
                table = pa.table(
                    {
                        "search_id": [search_id] * len(impressions),
                        "rank": pa.array([i.rank for i in impressions], pa.int32()),
                        "doc_id": [i.doc_id for i in impressions],
                        "score": pa.array([i.score for i in impressions], pa.float64()),
                        "team": pa.array([i.team for i in impressions], pa.string()),
                    }
                )
                con.register("_imp_batch", table)
                try:
                    _x(
                        con,
                        "INSERT INTO impressions (search_id, rank, doc_id, score, team) "
                        "SELECT search_id, rank, doc_id, score, team FROM _imp_batch",
                    )
                finally:
                    con.unregister("_imp_batch")

    def query_vectors(self, vector_version: str, queries: set[str] | None = None) -> dict[str, np.ndarray]:
        """The logged query vectors that `vector_version` computed, by query text (latest search wins).

        Args:
            vector_version: the base version whose vectors are wanted (others are not comparable).
            queries: only these texts (default: all).

        Returns:
            Query text -> float32 vector.
        """
        rows = self.query(
            "SELECT query, arg_max(query_vector, ts) FROM searches "
            "WHERE vector_version = ? AND query_vector IS NOT NULL GROUP BY query",
            [vector_version],
        )
        return {q: decode_vector(blob) for q, blob in rows if queries is None or q in queries}

    def add_events(self, events: list[Event]) -> tuple[int, int]:
        """Validate and store a batch of feedback events atomically; duplicates by event_id are skipped.

        Args:
            events: the batch, in request order.

        Returns:
            (accepted, duplicates): new events stored, and events whose event_id was already stored
            (or repeated within the batch).

        Raises:
            InvalidInput: some event names an unknown search or a document not shown in that search;
                the message names each bad event and nothing is written.
            Conflict: an event_id comes again with other content (search_id, doc_id, type, or a ts that
                differs where both copies give one): an idempotency key reused for another event; the message
                names each and nothing is written.
        """
        if not events:
            return 0, 0
        now = utcnow()
        table = pa.table(
            {
                "idx": pa.array(range(len(events)), pa.int32()),
                "event_id": [e.event_id for e in events],
                "search_id": [e.search_id for e in events],
                "doc_id": [e.doc_id for e in events],
                "type": [e.type for e in events],
                "ts": pa.array([to_utc_naive(e.ts) or now for e in events], pa.timestamp("us")),
                "ts_given": pa.array([e.ts is not None for e in events], pa.bool_()),
            }
        )
        with self.transaction() as con:
            con.register("_ev_batch", table)
            try:
                bad = _x(
                    con,
                    """
                    WITH shown AS (  -- only the batch's searches: a semi-join, not every impression ever logged
                        SELECT DISTINCT i.search_id, i.doc_id FROM impressions i
                        WHERE i.search_id IN (SELECT search_id FROM _ev_batch)
                    )
                    SELECT b.idx, b.event_id, b.search_id, b.doc_id, s.search_id IS NULL AS no_search
                    FROM _ev_batch b
                    LEFT JOIN searches s ON s.search_id = b.search_id
                    LEFT JOIN shown i ON i.search_id = b.search_id AND i.doc_id = b.doc_id
                    WHERE s.search_id IS NULL OR i.doc_id IS NULL
                    ORDER BY b.idx LIMIT 20
                    """,
                )
                if bad:
                    raise InvalidInput(_describe_bad_events(bad))
                conflicts = _x(con, _CONFLICTS_SQL)
                if conflicts:
                    raise Conflict(_describe_conflicts(conflicts))
                before = _x(con, "SELECT count(*) FROM events")[0][0]
                _x(
                    con,
                    """
                    INSERT INTO events
                    SELECT event_id, search_id, doc_id, type, ts, ? FROM (
                        SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY idx) AS n FROM _ev_batch
                    ) b
                    WHERE n = 1 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.event_id = b.event_id)
                    """,
                    [now],
                )
                accepted = _x(con, "SELECT count(*) FROM events")[0][0] - before
            finally:
                con.unregister("_ev_batch")
        return accepted, len(events) - accepted

    def log_external_searches(self, searches: list[tuple[str, str, str | None, list[str]]]) -> None:
        """Record searches another engine answered, with the hits it showed, all in one transaction.

        Args:
            searches: (search_id, query, user_id, doc ids shown best first) each; the model version is "external".
        """
        now = utcnow()
        with self.transaction() as con:
            for search_id, query, user_id, doc_ids in searches:
                _x(
                    con,
                    "INSERT INTO searches (search_id, ts, query, k, model_version, user_id) VALUES (?, ?, ?, ?, ?, ?)",
                    [search_id, now, query, max(len(doc_ids), 1), EXTERNAL_VERSION, user_id],
                )
                if doc_ids:
                    con.executemany(
                        "INSERT INTO impressions (search_id, rank, doc_id, score) VALUES (?, ?, ?, 0.0)",
                        [[search_id, rank, doc_id] for rank, doc_id in enumerate(doc_ids, start=1)],
                    )

    def shown_ranks(self, search_ids: set[str]) -> dict[str, dict[str, int]]:
        """search_id -> {doc_id: rank it was shown at} for each of these searches that was logged (a search with
        no hits maps to {}; unknown ids are absent): what feedback from another format is checked against."""
        if not search_ids:
            return {}
        marks = ", ".join("?" * len(search_ids))
        rows = self.query(
            "SELECT s.search_id, i.doc_id, min(i.rank) FROM searches s LEFT JOIN impressions i USING (search_id) "
            f"WHERE s.search_id IN ({marks}) GROUP BY s.search_id, i.doc_id",
            sorted(search_ids),
        )
        out: dict[str, dict[str, int]] = {}
        for search_id, doc_id, rank in rows:
            shown = out.setdefault(search_id, {})
            if doc_id is not None:
                shown[doc_id] = int(rank)
        return out

    # --- cycle records (the runner owns them; start-up recovery settles interrupted ones) ---------------

    def stats(self) -> dict[str, int]:
        """Row counts of the main tables."""
        row = self.query(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM searches), "
            "(SELECT count(*) FROM impressions), (SELECT count(*) FROM events)"
        )[0]
        return dict(zip(("documents", "searches", "impressions", "events"), map(int, row), strict=True))


def encode_vector(vector: np.ndarray) -> bytes:
    """A vector as compact float16 bytes (cosine changes by < 1e-3, far below what training notices)."""
    return np.asarray(vector, dtype=np.float16).tobytes()


def decode_vector(blob: bytes) -> np.ndarray:
    """The float32 vector of `encode_vector`'s bytes."""
    return np.frombuffer(blob, dtype=np.float16).astype(np.float32)


# An event_id seen again (stored, or earlier in the batch) whose content differs. A stored event's ts equals its
# received_at exactly when the client gave none: an omitted ts matches any, on either side.
_CONFLICTS_SQL = """
    SELECT b.idx, b.event_id, NULL AS first_idx, e.search_id, e.doc_id, e.type
    FROM _ev_batch b JOIN events e ON e.event_id = b.event_id
    WHERE e.search_id <> b.search_id OR e.doc_id <> b.doc_id OR e.type <> b.type
       OR (b.ts_given AND e.ts <> e.received_at AND e.ts <> b.ts)
    UNION ALL
    SELECT b.idx, b.event_id, f.idx AS first_idx, f.search_id, f.doc_id, f.type
    FROM _ev_batch b JOIN _ev_batch f ON f.event_id = b.event_id AND f.idx < b.idx
    WHERE f.search_id <> b.search_id OR f.doc_id <> b.doc_id OR f.type <> b.type
       OR (b.ts_given AND f.ts_given AND f.ts <> b.ts)
    ORDER BY idx LIMIT 20
"""


def _describe_conflicts(rows: list[tuple[Any, ...]]) -> str:
    """One message naming every event whose event_id was already used for another event."""
    parts = []
    for idx, event_id, first_idx, search_id, doc_id, type_ in rows:
        where = "was already stored" if first_idx is None else f"is already used by events[{first_idx}]"
        parts.append(
            f"events[{idx}] (event_id {event_id!r}): this event_id {where} for another event "
            f"(search_id {search_id!r}, doc_id {doc_id!r}, type {type_!r})"
        )
    return (
        "batch rejected, nothing was stored: " + "; ".join(parts) + ". An event_id is an idempotency key: "
        "resend an event unchanged, and give each new event its own event_id"
    )


def _describe_bad_events(bad: list[tuple[Any, ...]]) -> str:
    """One message naming every bad event (index in the batch, event_id, and what is wrong)."""
    parts = []
    for idx, event_id, search_id, doc_id, no_search in bad:
        why = (
            f"search_id {search_id!r} does not exist"
            if no_search
            else f"doc_id {doc_id!r} was not shown in search {search_id!r}"
        )
        parts.append(f"events[{idx}] (event_id {event_id!r}): {why}")
    return "batch rejected, nothing was stored: " + "; ".join(parts)
