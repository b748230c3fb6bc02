"""Event store: documents, searches, impressions and feedback events in one DuckDB file.

The serving process owns the file (DuckDB allows one writer process). Writes go in as Arrow batches inside
one transaction each, so a request's rows are either all committed or none are, and a 2xx answer to a write
is only sent after COMMIT (DuckDB's WAL makes a committed transaction survive `kill -9`). Searches are the
exception the serving path chooses: queued (and journaled, so a `kill -9` loses none), and written in batches
in the background, always before any other statement on the store (`log_search(wait=False)`,
`start_search_log`, `flywheel.serve.search_journal`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from flywheel.errors import NotFound, StoreLocked
from flywheel.serve.schema import MIGRATIONS
from flywheel.serve.search_journal import SearchJournal
from flywheel.serve.store_writes import SearchRecord, insert_events, insert_searches
from flywheel.types import Document, Event, Impression
from flywheel.util.files import utcnow

log = logging.getLogger(__name__)

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
        # Searches answered but not yet written (`log_search(..., wait=False)`): written before any other
        # statement runs, so every read and write of this store sees them; a background thread writes them
        # every `start_search_log` interval.
        self._pending: list[SearchRecord] = []
        self._pending_lock = threading.Lock()
        self._max_pending = 1000
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self._journal: SearchJournal | None = None
        self._migrate()
        # Each queued search is also appended to the journal (a file per batch), deleted once committed; what an
        # earlier process left there (answered, never committed: a kill) is written back now.
        self._journal = SearchJournal(self.path.with_name(self.path.name + ".searches")) if self.path else None
        if self._journal is not None:
            self._replay_journal(self._journal)

    def close(self) -> None:
        """Write queued searches, checkpoint and close the file."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
        with self._lock:
            try:
                self._write_pending()
            except duckdb.Error:
                log.exception("closing with %d searches that could not be logged", len(self._pending))
            finally:
                if self._journal is not None:
                    self._journal.close()  # what could not be written stays journaled for the next start
                self._con.close()

    def start_search_log(self, interval_s: float, max_pending: int = 1000) -> None:
        """Write queued searches in the background every `interval_s` seconds (one transaction per flush).

        Args:
            interval_s: the longest a queued search waits in memory (journaled meanwhile: a kill loses none).
            max_pending: a search queued while this many wait is written by its own request (back-pressure).
        """
        self._max_pending = max_pending
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(interval_s,), name="search-log", daemon=True
            )
            self._flusher.start()

    def flush_searches(self) -> None:
        """Write every queued search now."""
        with self._lock:
            self._write_pending()

    def _flush_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            if self._pending:
                try:
                    self.flush_searches()
                except Exception:  # kept queued: the next flush, or the next statement, tries again
                    log.exception("writing %d queued searches failed", len(self._pending))

    def _write_pending(self) -> None:
        """Write the queued searches in one transaction (store lock held).

        If that fails, each is tried in its own: one that fails alone (it can never be written) is dropped and
        logged; if every one fails, the store itself is failing, so they all stay queued and the error is raised.
        """
        with self._pending_lock:
            batch, self._pending = self._pending, []
            upto = self._journal.rotate() if batch and self._journal is not None else 0
        if not batch:
            return
        if self._insert(batch):
            self._release(upto)
            return
        failed = [record for record in batch if not self._insert([record])]
        if len(failed) == len(batch):
            with self._pending_lock:
                self._pending[:0] = batch  # still journaled: released by the flush that writes them
            self._insert(batch, raise_error=True)
        for record in failed:
            log.error("search %s could not be logged and was dropped", record.search_id)
        self._release(upto)

    def _release(self, upto: int) -> None:
        if self._journal is not None:
            with self._pending_lock:
                self._journal.release(upto)

    def _replay_journal(self, journal: SearchJournal) -> None:
        """Write the searches an earlier process journaled but never committed (those not already stored)."""
        records, upto = journal.leftover()
        if records:
            with self._lock:
                ids = list({r.search_id for r in records})
                sql = "SELECT search_id FROM searches WHERE list_contains(?, search_id)"
                stored = {row[0] for row in _x(self._con, sql, [ids])}
                seen: set[str] = set()
                for record in records:
                    if record.search_id not in stored and record.search_id not in seen:
                        seen.add(record.search_id)
                        self._pending.append(record)
                log.info("search journal: writing back %d searches a stopped process answered", len(self._pending))
                self._write_pending()
        journal.release(upto)

    def _insert(self, records: list[SearchRecord], raise_error: bool = False) -> bool:
        """Insert searches in one transaction; False (rolled back) if it failed."""
        _x(self._con, "BEGIN TRANSACTION")
        try:
            insert_searches(self._con, records)
        except Exception:
            _x(self._con, "ROLLBACK")
            if raise_error:
                raise
            return False
        _x(self._con, "COMMIT")
        return True

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run a block in one transaction under the store lock; roll back on any exception."""
        with self._lock:
            self._write_pending()
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
            self._write_pending()
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
        wait: bool = True,
    ) -> None:
        """Record one search and the hits it showed, in one transaction (or queue it, with `wait=False`).

        Args:
            query_vector: the base model's query vector (before any adapter), kept as float16 for adapter cycles.
            vector_version: the base version that computed `query_vector`.
            search_filter: the metadata filter the search applied (stored as JSON).
            experiment: the online test's id (its cycle id) when one ran; `arm` says how this search took part
                (or, with no test, "explore" when its last positions explored).
            shadow: in a shadow test, (the challenger's doc ids, best first; their overlap with what was shown).
            wait: False queues the search: it is written by the background flush (`start_search_log`) or before
                the next statement on this store, whichever comes first, so feedback on it is never refused.
        """
        record = SearchRecord(
            search_id=search_id,
            ts=utcnow(),
            query=query,
            k=k,
            model_version=model_version,
            impressions=impressions,
            user_id=user_id,
            session_id=session_id,
            query_vector=encode_vector(query_vector) if query_vector is not None else None,
            vector_version=vector_version,
            filter_json=json.dumps(search_filter, sort_keys=True, ensure_ascii=False) if search_filter else None,
            experiment=experiment,
            arm=arm,
            shadow=shadow,
        )
        if wait:
            with self.transaction() as con:
                insert_searches(con, [record])
            return
        if len(self._pending) >= self._max_pending:
            self.flush_searches()  # back-pressure: the queue stays bounded
        with self._pending_lock:
            if self._journal is not None:
                self._journal.append(record)
            self._pending.append(record)

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
        with self.transaction() as con:
            return insert_events(con, events, utcnow())

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
