"""The search journal: queued searches survive a kill of the process and are written back exactly once."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flywheel.serve.search_journal import SearchJournal, _from_line, _to_line
from flywheel.serve.store import Store
from flywheel.serve.store_writes import SearchRecord
from flywheel.types import Event, Impression

_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
_opt = st.none() | _text


@settings(max_examples=50, deadline=None)
@given(
    query=_text,
    user=_opt,
    vector=st.none() | st.binary(max_size=64),
    filt=_opt,
    team=_opt,
    shadow=st.none() | st.tuples(st.lists(_text, max_size=3), st.integers(0, 10)),
    score=st.floats(allow_nan=False, allow_infinity=False),
)
def test_a_record_reads_back_as_it_was_written(query, user, vector, filt, team, shadow, score) -> None:
    record = SearchRecord(
        search_id="s1",
        ts=datetime(2026, 12, 3, 14, 0, 0, 123456),
        query=query,
        k=3,
        model_version="v1",
        impressions=[Impression(1, "d\n1", score, team)],
        user_id=user,
        session_id=user,
        query_vector=vector,
        vector_version="v1",
        filter_json=filt,
        experiment=None,
        arm=team,
        shadow=shadow,
    )
    line = _to_line(record)
    assert line.endswith(b"\n") and line.count(b"\n") == 1  # one line, whatever the texts hold
    assert _from_line(line) == record


_KILLED_WRITER = """
import os, signal, sys
import numpy as np
from flywheel.serve.store import Store
from flywheel.types import Impression
store = Store(sys.argv[1])
store.start_search_log(3600)  # the timer never fires: only the journal holds what follows
store.log_search("s0", "written", 1, "v1", [Impression(1, "a", 0.9)])  # committed before the kill
for i in range(1, 6):
    store.log_search(f"s{i}", f"q{i}", 2, "v1", [Impression(1, "a", 0.9), Impression(2, "b", 0.8)],
                     query_vector=np.ones(4, np.float32), vector_version="v1", search_filter={"lang": "en"},
                     wait=False)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_searches_queued_when_the_process_is_killed_are_written_back_at_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    assert list((tmp_path / "f.duckdb.searches").glob("*.jsonl")), "the killed process journaled nothing"

    store = Store(path)
    try:
        assert store.stats() == {"documents": 0, "searches": 6, "impressions": 11, "events": 0}
        rows = store.query("SELECT search_id, filter, vector_version FROM searches WHERE search_id = 's3'")
        assert rows == [("s3", '{"lang": "en"}', "v1")]
        assert np.allclose(store.query_vectors("v1")["q3"], 1.0)
        assert store.add_events([Event("e1", "s5", "b", "click")]) == (1, 0)  # feedback on it is judged as usual
    finally:
        store.close()
    assert not list((tmp_path / "f.duckdb.searches").glob("*.jsonl"))  # written back once, then released
    again = Store(path)
    try:
        assert again.stats()["searches"] == 6
    finally:
        again.close()


def test_a_journaled_search_already_committed_is_not_written_twice(tmp_path: Path) -> None:
    path = tmp_path / "f.duckdb"
    store = Store(path)
    store.log_search("s1", "q", 1, "v1", [Impression(1, "a", 0.9)])
    store.close()
    # A kill between a batch's commit and the release of its segment leaves committed searches journaled.
    journal = SearchJournal(tmp_path / "f.duckdb.searches")
    for search_id, doc in (("s1", "a"), ("s2", "b"), ("s2", "c")):
        journal.append(SearchRecord(search_id, datetime(2026, 12, 3), "q", 1, "v1", [Impression(1, doc, 0.5)]))
    journal.close()
    with open(journal.folder / "000000001.jsonl", "ab") as f:
        f.write(b'{"search_id": "s3", "ts"')  # a line cut short by the kill: skipped

    store = Store(path)
    try:
        assert store.query("SELECT search_id, doc_id FROM impressions ORDER BY search_id") == [("s1", "a"), ("s2", "b")]
    finally:
        store.close()


def test_a_flushed_batch_releases_its_segments_and_new_searches_go_to_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "f.duckdb")
    folder = tmp_path / "f.duckdb.searches"
    try:
        store.log_search("s1", "q", 1, "v1", [Impression(1, "a", 0.9)], wait=False)
        assert len(list(folder.glob("*.jsonl"))) == 1
        store.flush_searches()
        assert not list(folder.glob("*.jsonl"))
        store.log_search("s2", "q", 1, "v1", [Impression(1, "a", 0.9)], wait=False)
        assert [p.name for p in folder.glob("*.jsonl")] == ["000000002.jsonl"]
    finally:
        store.close()
    assert not list(folder.glob("*.jsonl"))
