"""Fixtures shared by the cycle's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.serve.store import Store
from flywheel.types import Document


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A real DuckDB store holding documents "a" .. "h" (text "text <id>"), closed after the test."""
    s = Store(tmp_path / "cycle.duckdb")
    with s.transaction() as con:
        s.upsert_documents(con, [Document(c, f"text {c}") for c in "abcdefgh"])
    yield s
    s.close()
