"""Small file and time helpers: atomic JSON writes, UTC timestamps, staging folders."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flywheel.errors import InvalidInput


def now_iso() -> str:
    """UTC now as ISO 8601, the timestamp format of every artifact."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half of one (tmp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, ensure_ascii=False, default=str)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(path.read_text(encoding="utf-8"))


def utcnow() -> datetime:
    """Naive UTC now: DuckDB TIMESTAMP columns hold UTC without a zone."""
    return datetime.now(UTC).replace(tzinfo=None)


def to_utc_naive(ts: datetime | None) -> datetime | None:
    """Normalise a client timestamp to naive UTC (naive input is taken as UTC already)."""
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


def prepare_tmp_dir(out_dir: Path) -> Path:
    """Check `out_dir` is free and create an empty sibling to train into (same filesystem: rename works)."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInput(f"output directory {out_dir} already exists and is not empty")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.training-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished directory to `out_dir` (an empty placeholder directory is replaced)."""
    if out_dir.is_dir():
        out_dir.rmdir()
    os.rename(tmp, out_dir)
