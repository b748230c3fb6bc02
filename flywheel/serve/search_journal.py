"""The search journal: each queued search appended to a file as it is answered, so a `kill -9` loses none.

A search answered with `log_search(wait=False)` waits in memory until the store writes a batch of them to
DuckDB (one transaction per batch, a few milliseconds each however small the batch). The journal makes that
wait safe: the record is appended to the current segment first (one `write`, into the page cache, which a
killed process does not take with it), the store closes the segment when it takes a batch, and deletes the
segments once that batch is committed. At start-up the store writes back whatever segments are left (the
searches it had answered but not yet committed) and deletes them. Segments are not synced on each write, so a
power cut, unlike a kill, can lose the searches of the last moments, as with the vector engines' logs.

Layout: `<db file>.searches/<n>.jsonl`, one JSON object per line (a `SearchRecord`, its query vector as
base64); `n` grows by one each time a batch is taken.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from datetime import datetime
from pathlib import Path

from flywheel.serve.store_writes import SearchRecord
from flywheel.types import Impression

log = logging.getLogger(__name__)


def _to_line(record: SearchRecord) -> bytes:
    row = {
        "search_id": record.search_id,
        "ts": record.ts.isoformat(),
        "query": record.query,
        "k": record.k,
        "model_version": record.model_version,
        "impressions": [[i.rank, i.doc_id, i.score, i.team] for i in record.impressions],
        "user_id": record.user_id,
        "session_id": record.session_id,
        "query_vector": base64.b64encode(record.query_vector).decode() if record.query_vector is not None else None,
        "vector_version": record.vector_version,
        "filter": record.filter_json,
        "experiment": record.experiment,
        "arm": record.arm,
        "shadow": list(record.shadow) if record.shadow is not None else None,
    }
    return (json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _from_line(line: bytes) -> SearchRecord:
    row = json.loads(line)
    vector = row["query_vector"]
    shadow = row["shadow"]
    return SearchRecord(
        search_id=row["search_id"],
        ts=datetime.fromisoformat(row["ts"]),
        query=row["query"],
        k=row["k"],
        model_version=row["model_version"],
        impressions=[Impression(rank, doc_id, score, team) for rank, doc_id, score, team in row["impressions"]],
        user_id=row["user_id"],
        session_id=row["session_id"],
        query_vector=base64.b64decode(vector) if vector is not None else None,
        vector_version=row["vector_version"],
        filter_json=row["filter"],
        experiment=row["experiment"],
        arm=row["arm"],
        shadow=(shadow[0], shadow[1]) if shadow is not None else None,
    )


class SearchJournal:
    """Append-only segments of the searches queued in memory; the caller serialises every call (one lock)."""

    def __init__(self, folder: Path) -> None:
        """Open the journal folder (created if missing); segments left by an earlier process stay for `leftover`.

        Args:
            folder: where the segments live, next to the DuckDB file.
        """
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._left = self._segments()
        self._next = (max(self._left) + 1) if self._left else 1
        self._fd: int | None = None  # the open segment, opened on its first append

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.folder.glob("*.jsonl") if p.stem.isdigit())

    def _path(self, n: int) -> Path:
        return self.folder / f"{n:09d}.jsonl"

    def leftover(self) -> tuple[list[SearchRecord], int]:
        """The searches an earlier process journaled but did not commit, oldest first, and the last segment.

        A line cut short by a kill in the middle of its write (only ever a segment's last) is skipped.

        Returns:
            (the records, the number to pass to `release` once they are committed; 0 if there were none).
        """
        records: list[SearchRecord] = []
        for n in self._left:
            for line in self._path(n).read_bytes().splitlines():
                try:
                    records.append(_from_line(line))
                except (ValueError, KeyError, TypeError):
                    log.warning("search journal %s: skipped an unreadable line (cut short by a kill?)", n)
        return records, (self._left[-1] if self._left else 0)

    def append(self, record: SearchRecord) -> None:
        """Write one queued search to the open segment (one `write`, no sync)."""
        if self._fd is None:
            self._fd = os.open(self._path(self._next), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, _to_line(record))

    def rotate(self) -> int:
        """Close the open segment (the searches taken for a batch are in it or before it); its number.

        Returns:
            The last segment that holds a taken search: `release` it once the batch is committed.
        """
        if self._fd is None:
            return self._next - 1
        os.close(self._fd)
        self._fd = None
        self._next += 1
        return self._next - 1

    def release(self, upto: int) -> None:
        """Delete every closed segment up to `upto`: their searches are committed (or were dropped as unwritable)."""
        for n in self._segments():
            if n <= upto and n < self._next:
                self._path(n).unlink(missing_ok=True)

    def close(self) -> None:
        """Close the open segment (left on disk unless released)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
