"""The one reader of users' data files: JSONL or TSV/CSV, gzip or not, with errors that name file and line."""

from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from flywheel.errors import DataFormatError

_GZIP_MAGIC = b"\x1f\x8b"


def open_text(path: Path) -> io.TextIOBase:
    """Open a file as UTF-8 text, decompressing gzip by its magic bytes so a misnamed file still reads."""
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    with path.open("rb") as raw:
        magic = raw.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def _file_kind(path: Path) -> str:
    """Return 'jsonl', 'tsv' or 'csv' from the suffix (ignoring .gz), sniffing the content when unsure."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    suffix = suffixes[-1] if suffixes else ""
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".tsv", ".csv"):
        return suffix[1:]
    with open_text(path) as fh:
        head = fh.read(4096)
    stripped = head.lstrip()
    if stripped.startswith("{"):
        return "jsonl"
    first_line = stripped.split("\n", 1)[0]
    return "tsv" if "\t" in first_line else "csv"


def iter_records(
    path: Path, columns: Sequence[Sequence[str]] = (), kind: str | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, record dict) from a JSONL or delimited file: the one reader every loader shares.

    Args:
        path: The file (gzip is detected by content).
        columns: Alternative sets of columns a TSV/CSV header must hold (any one set will do); JSONL
            records are checked by the caller, record by record.
        kind: "jsonl", "tsv" or "csv"; default from the suffix, sniffing the content when unsure.

    Raises:
        DataFormatError: Missing or unreadable file, invalid JSON, a header without the columns, or a row
            of the wrong width; the message names the file and the line.
    """
    kind = kind or _file_kind(path)
    try:
        with open_text(path) as fh:
            if kind == "jsonl":
                yield from _iter_jsonl(path, fh)
            else:
                yield from _iter_delimited(path, fh, "\t" if kind == "tsv" else ",", columns)
    except UnicodeDecodeError as exc:
        raise DataFormatError(f"{path}: not UTF-8 text ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read ({exc})") from exc


def _iter_jsonl(path: Path, fh: io.TextIOBase) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield one JSON object per non-blank line."""
    for lineno, line in enumerate(fh, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataFormatError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        if not isinstance(record, dict):
            raise DataFormatError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
        yield lineno, record


def _iter_delimited(
    path: Path, fh: io.TextIOBase, delimiter: str, columns: Sequence[Sequence[str]]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield header-keyed rows of a TSV/CSV file; the csv module handles quoted fields with newlines."""
    # Quora questions can exceed the csv module's default 128 KiB field limit only in corrupt files,
    # but a raised limit keeps such files readable so that the row-level checks can name the line.
    csv.field_size_limit(16 * 1024 * 1024)
    reader = csv.reader(fh, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        raise DataFormatError(f"{path}:1: unreadable header ({exc})") from exc
    header = [name.strip().lstrip("\ufeff") for name in header]
    _check_header(path, header, columns)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataFormatError(f"{path}:{reader.line_num}: malformed row ({exc})") from exc
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != len(header):
            raise DataFormatError(
                f"{path}:{reader.line_num}: expected {len(header)} fields ({', '.join(header)}), got {len(row)}"
            )
        yield reader.line_num, dict(zip(header, row, strict=True))


def _check_header(path: Path, header: list[str], columns: Sequence[Sequence[str]]) -> None:
    """Raise naming the missing columns (of the first accepted set) unless one accepted set is complete."""
    if not columns or any(all(col in header for col in schema) for schema in columns):
        return
    missing = [col for col in columns[0] if col not in header]
    alternatives = "".join(f" (or {', '.join(schema)})" for schema in columns[1:])
    raise DataFormatError(
        f"{path}:1: header lacks column(s) {', '.join(missing)}{alternatives}; found: {', '.join(header)}"
    )
