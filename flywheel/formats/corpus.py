"""Reading a corpus file (JSONL or CSV with id, text[, metadata]) into Documents, with clear errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flywheel.errors import DataFormatError
from flywheel.formats.records import iter_records
from flywheel.types import Document

# The columns a CSV/TSV corpus header needs (JSONL rows may say `_id`, as BEIR corpora do).
CORPUS_COLUMNS = ("id", "text")


def _kind(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    for ext in (".jsonl", ".ndjson", ".json"):
        if name.endswith(ext):
            return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".tsv"):
        return "tsv"
    raise DataFormatError(f"{path}: unknown file type; use .jsonl, .csv or .tsv (optionally .gz)")


def _document(path: Path, line: int, row: dict[str, Any]) -> Document:
    """Build one Document from a parsed row, naming the file and line on any problem."""
    doc_id = row.get("id", row.get("_id"))
    if doc_id is None or str(doc_id).strip() == "":
        raise DataFormatError(f"{path}:{line}: missing column 'id'")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise DataFormatError(f"{path}:{line}: missing or empty column 'text'")
    if row.get("title"):  # BEIR corpora keep a title apart; it belongs to what is embedded
        text = f"{row['title']}\n{text}"
    metadata = row.get("metadata") or {}
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{line}: column 'metadata' is not valid JSON ({exc.msg})") from exc
    if not isinstance(metadata, dict):
        raise DataFormatError(f"{path}:{line}: 'metadata' must be a JSON object")
    return Document(str(doc_id), text, metadata)


def read_documents(path: Path | str) -> Iterator[Document]:
    """Yield the documents of a JSONL/CSV/TSV file (optionally gzipped).

    JSONL rows are objects with `id` (or BEIR's `_id`), `text`, optional `title` and `metadata`; CSV/TSV need a
    header with `id` and `text`, and may have a `metadata` column holding JSON.

    Args:
        path: the file.

    Raises:
        DataFormatError: the file type, a header, or a line is wrong; the message names file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    for line, row in iter_records(path, columns=(CORPUS_COLUMNS,), kind=_kind(path)):
        yield _document(path, line, row)


def batched(items: Iterator[Document], size: int) -> Iterator[list[Document]]:
    """Group an iterator into lists of at most `size` items."""
    batch: list[Document] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
