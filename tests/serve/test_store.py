"""The DuckDB event store: migrations, documents, search logging (query vectors too), atomic feedback."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pytest

from flywheel.errors import InvalidInput, NotFound
from flywheel.models.query_adapter import normalise
from flywheel.serve.store import MIGRATIONS, Store
from flywheel.types import Document, Event, Impression


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "f.duckdb")
    yield s
    s.close()


def _search(store: Store, search_id: str = "s1", docs: tuple[str, ...] = ("a", "b", "c")) -> None:
    store.log_search(search_id, "q", len(docs), "v1", [Impression(i + 1, d, 1.0 - i / 10) for i, d in enumerate(docs)])


def test_migrations_are_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "m.duckdb"
    Store(path).close()
    store = Store(path)
    rows = store.query("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [r[0] for r in rows] == [m[0] for m in MIGRATIONS]
    assert store.schema_version() == MIGRATIONS[-1][0]
    store.close()


def test_upsert_replaces_and_keeps_last_copy(store: Store) -> None:
    with store.transaction() as con:
        assert store.upsert_documents(con, [Document("a", "one"), Document("b", "two", {"k": 1})]) == 2
    with store.transaction() as con:
        assert store.upsert_documents(con, [Document("a", "first"), Document("a", "second")]) == 1
    docs = {d.id: d for batch in store.iter_documents(batch_size=1) for d in batch}
    assert docs["a"].text == "second"
    assert docs["b"].metadata == {"k": 1}
    assert store.count_documents() == 2


def test_transaction_rolls_back_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction() as con:
        store.upsert_documents(con, [Document("a", "one")])
        raise RuntimeError("qdrant down")
    assert store.count_documents() == 0


def test_delete_leaves_tombstone(store: Store) -> None:
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=1)
    with store.transaction() as con:
        store.upsert_documents(con, [Document("a", "one"), Document("b", "two")])
    with store.transaction() as con:
        store.delete_document(con, "a")
    assert store.deleted_since(start) == ["a"]
    with pytest.raises(NotFound), store.transaction() as con:
        store.delete_document(con, "a")
    changed = [d.id for batch in store.iter_documents(changed_since=start) for d in batch]
    assert changed == ["b"]


def test_log_search_and_stats(store: Store) -> None:
    _search(store)
    assert store.stats() == {"documents": 0, "searches": 1, "impressions": 3, "events": 0}
    assert store.query("SELECT rank, doc_id FROM impressions ORDER BY rank") == [(1, "a"), (2, "b"), (3, "c")]


def test_add_events_dedupes_within_and_across_batches(store: Store) -> None:
    _search(store)
    assert store.add_events([Event("e1", "s1", "a", "click"), Event("e1", "s1", "a", "click")]) == (1, 1)
    assert store.add_events([Event("e1", "s1", "a", "click"), Event("e2", "s1", "b", "skip")]) == (1, 1)
    assert store.stats()["events"] == 2


def test_add_events_rejects_whole_batch(store: Store) -> None:
    _search(store)
    with pytest.raises(InvalidInput) as info:
        store.add_events([Event("ok", "s1", "a", "click"), Event("bad", "s1", "zzz", "click")])
    assert "events[1]" in str(info.value) and "'zzz' was not shown" in str(info.value)
    assert store.stats()["events"] == 0


def test_event_timestamps_are_utc(store: Store) -> None:
    _search(store)
    ts = datetime(2026, 1, 2, 5, 0, tzinfo=UTC) + timedelta(hours=0)
    local = ts.astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    store.add_events([Event("e1", "s1", "a", "click", local), Event("e2", "s1", "b", "skip")])
    rows = dict(store.query("SELECT event_id, ts FROM events"))
    assert rows["e1"] == datetime(2026, 1, 2, 5, 0)
    assert abs((rows["e2"] - datetime.now(UTC).replace(tzinfo=None)).total_seconds()) < 60


def test_committed_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.duckdb"
    store = Store(path)
    _search(store)
    store.add_events([Event("e1", "s1", "a", "click")])
    store.close()
    again = Store(path)
    assert again.stats()["events"] == 1
    again.close()


def test_logged_query_vectors_are_compact_and_per_base(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    vector = normalise(np.random.default_rng(0).normal(size=384))
    store.log_search(
        "s1", "how to learn", 1, "v2", [Impression(1, "d1", 0.5)], query_vector=vector, vector_version="v1"
    )
    store.log_search("s2", "other base", 1, "v3", [], query_vector=vector, vector_version="v3")
    store.log_search("s3", "no vector", 1, "v1", [])
    blob = store.query("SELECT query_vector FROM searches WHERE search_id = 's1'")[0][0]
    assert len(blob) == 384 * 2  # float16
    got = store.query_vectors("v1")
    assert list(got) == ["how to learn"]
    assert float(got["how to learn"] @ vector) > 0.999
    assert store.query_vectors("v1", {"something else"}) == {}
    store.close()


def test_migration_upgrades_an_existing_database(tmp_path: Path) -> None:
    """A DB written before migration 3 keeps its rows; old searches have no vector, new ones do."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    for version, name, sql in MIGRATIONS[:2]:
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
    con.execute("INSERT INTO searches VALUES ('old', now(), 'old query', 3, 'v1', NULL, NULL)")
    con.execute("INSERT INTO cycles (cycle_id, trigger, state, started_at) VALUES ('c-old', 'api', 'promoted', now())")
    con.close()

    store = Store(path)
    assert store.schema_version() == len(MIGRATIONS)
    assert store.query("SELECT query, query_vector, vector_version, filter FROM searches") == [
        ("old query", None, None, None)
    ]
    assert store.query("SELECT kind FROM cycles") == [(None,)]
    store.log_search("new", "new query", 3, "v1", [], query_vector=np.ones(4, np.float32), vector_version="v1")
    assert set(store.query_vectors("v1")) == {"new query"}
    store.close()
    assert Store(path).schema_version() == len(MIGRATIONS)  # runs once


def _queued(store: Store, search_id: str, docs: tuple[str, ...] = ("a", "b")) -> None:
    hits = [Impression(i + 1, d, 1.0 - i / 10) for i, d in enumerate(docs)]
    store.log_search(search_id, "q", len(docs), "v1", hits, search_filter={"lang": "en"}, wait=False)


def test_a_queued_search_is_written_before_any_other_statement_so_feedback_on_it_is_accepted(store: Store) -> None:
    _queued(store, "s1")
    assert store.add_events([Event("e1", "s1", "b", "click")]) == (1, 0)
    _queued(store, "s2", ("c",))
    assert store.stats() == {"documents": 0, "searches": 2, "impressions": 3, "events": 1}
    rows = store.query("SELECT search_id, filter, k FROM searches ORDER BY search_id")
    assert [(r[0], json.loads(r[1]), r[2]) for r in rows] == [("s1", {"lang": "en"}, 2), ("s2", {"lang": "en"}, 1)]
    with pytest.raises(InvalidInput, match="doc_id 'a' was not shown in search 's2'"):
        store.add_events([Event("e2", "s2", "a", "click")])


def test_the_background_flush_writes_queued_searches_in_one_go_within_its_interval(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    store = Store(path)
    # A second connection to the same database reads without going through the store (which would flush).
    peek = duckdb.connect(str(path))
    try:
        store.start_search_log(0.05)
        for i in range(50):
            _queued(store, f"s{i}")
        deadline = time.monotonic() + 10
        while peek.execute("SELECT count(*) FROM searches").fetchone()[0] < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert peek.execute("SELECT count(*), count(DISTINCT search_id) FROM searches").fetchone() == (50, 50)
        assert peek.execute("SELECT count(*) FROM impressions").fetchone()[0] == 100
    finally:
        peek.close()
        store.close()


def test_close_writes_what_is_queued_and_the_queue_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    store = Store(path)
    store.start_search_log(3600, max_pending=3)  # the timer never fires here: only back-pressure and close write
    peek = duckdb.connect(str(path))
    try:
        for i in range(4):
            _queued(store, f"s{i}")
        # The fourth found three waiting and wrote them itself before queueing.
        assert peek.execute("SELECT count(*) FROM searches").fetchone()[0] == 3
    finally:
        peek.close()
    store.close()
    again = Store(path)
    try:
        assert again.stats()["searches"] == 4
    finally:
        again.close()


def test_a_queued_search_that_cannot_be_written_is_dropped_alone(store: Store) -> None:
    _queued(store, "s1", ("a",))
    _queued(store, "s1", ("b",))  # the same id again: it can never be written (the service's ids are uuid4)
    _queued(store, "s2", ("c",))
    store.flush_searches()
    assert store.query("SELECT search_id, doc_id FROM impressions ORDER BY search_id") == [("s1", "a"), ("s2", "c")]
    assert store.add_events([Event("e1", "s2", "c", "click")]) == (1, 0)
