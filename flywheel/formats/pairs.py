"""Load labelled pairs and training examples from JSONL / Quora TSV-CSV files, with precise format errors."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from flywheel.errors import DataFormatError
from flywheel.formats.records import iter_records
from flywheel.types import LabelledPair, TrainingExample

logger = logging.getLogger(__name__)

# Column names of the two labelled-pair schemas, in (query, document, label) order.
QUORA_COLUMNS = ("question1", "question2", "is_duplicate")
PAIR_COLUMNS = ("query", "document", "label")
_LABELLED_SCHEMAS = (QUORA_COLUMNS, PAIR_COLUMNS)


def load_labelled_pairs(path: str | Path) -> list[LabelledPair]:
    """Read labelled pairs from JSONL(.gz) or the Quora TSV/CSV(.gz) release.

    JSONL lines carry either `question1`, `question2`, `is_duplicate` or `query`, `document`, `label`;
    TSV/CSV files need a header with one of those column triples (extra columns such as `id`, `qid1`
    are ignored). Rows with an empty text are skipped with a warning, because the original Quora
    release has a few of them and they carry no signal.

    Args:
        path: The file to read; `.gz` (or gzip content) is decompressed transparently.

    Returns:
        The pairs in file order.

    Raises:
        DataFormatError: The file is missing, unreadable, or a line lacks a column or has a bad label;
            the message names the file, the line number and the column.
    """
    path = Path(path)
    pairs: list[LabelledPair] = []
    skipped: list[int] = []
    for lineno, record in iter_records(path, _LABELLED_SCHEMAS):
        pair = _labelled_from_record(path, lineno, record)
        if pair is None:
            skipped.append(lineno)
        else:
            pairs.append(pair)
    if skipped:
        logger.warning("%s: skipped %d row(s) with an empty text (first at line %d)", path, len(skipped), skipped[0])
    return pairs


def load_training_examples(path: str | Path) -> list[TrainingExample]:
    """Read training examples from JSONL(.gz) triplets or from any labelled-pair file.

    Triplet lines carry `query`, `positive` and optionally `negative` (a string or a list of strings;
    `negatives` is accepted as an alias). Labelled-pair files (see `load_labelled_pairs`) are converted
    with `examples_from_labelled`. The schema is chosen from the first record and must hold for all.

    Args:
        path: The file to read.

    Returns:
        The examples in file order.

    Raises:
        DataFormatError: Wrong format; the message names the file, line and column.
    """
    path = Path(path)
    if not is_triplet_file(path):
        return examples_from_labelled(load_labelled_pairs(path))
    examples = [_example_from_record(path, lineno, record) for lineno, record in iter_records(path, _LABELLED_SCHEMAS)]
    return [ex for ex in examples if ex is not None]


def is_triplet_file(path: str | Path) -> bool:
    """Tell triplet files from labelled-pair files by the first record (a trainer may want the raw pairs).

    Args:
        path: A JSONL(.gz) or TSV/CSV file.

    Returns:
        True when the first record has a `positive` column.
    """
    first = next(iter_records(Path(path), _LABELLED_SCHEMAS), None)
    return first is not None and "positive" in first[1]


def examples_from_labelled(pairs: Iterable[LabelledPair]) -> list[TrainingExample]:
    """Group labelled pairs by query into (query, positive, hard negatives) examples.

    Each positive document of a query becomes one example that carries every negative document of that
    query, so the skipped results reach the loss next to each click. A query with negatives but no
    positive yields nothing (a ranking loss needs a positive). Documents labelled both ways for the same
    query count as positives only, and texts equal to the query are dropped (they teach nothing).

    Args:
        pairs: Labelled pairs, e.g. mined from clicks (1) and skips (0).

    Returns:
        Examples in order of each query's first appearance, then of its positives.
    """
    # dicts keep first-seen order and drop repeats, so the output is deterministic.
    positives: dict[str, dict[str, None]] = {}
    negatives: dict[str, dict[str, None]] = {}
    for pair in pairs:
        if pair.document == pair.query:
            continue
        positives.setdefault(pair.query, {})
        negatives.setdefault(pair.query, {})
        (positives if pair.label > 0 else negatives)[pair.query][pair.document] = None
    examples: list[TrainingExample] = []
    for query, docs in positives.items():
        negs = tuple(doc for doc in negatives[query] if doc not in docs)
        examples.extend(TrainingExample(query, doc, negs) for doc in docs)
    return examples


def pair_texts(pairs: Sequence[LabelledPair]) -> list[str]:
    """Return the distinct texts of some pairs in first-seen order (what an encoder needs to embed once)."""
    return list(dict.fromkeys(text for pair in pairs for text in (pair.query, pair.document)))


def _labelled_from_record(path: Path, lineno: int, record: dict[str, Any]) -> LabelledPair | None:
    """Build a LabelledPair from one record, or None when a text is empty."""
    schema = QUORA_COLUMNS if "question1" in record else PAIR_COLUMNS
    if "question1" not in record and "query" not in record:
        raise DataFormatError(
            f"{path}:{lineno}: missing column 'question1' (or 'query'); "
            f"expected {', '.join(QUORA_COLUMNS)} or {', '.join(PAIR_COLUMNS)}"
        )
    query_col, doc_col, label_col = schema
    for col in schema:
        if col not in record:
            raise DataFormatError(f"{path}:{lineno}: missing column '{col}'")
    query = _text(path, lineno, query_col, record[query_col])
    document = _text(path, lineno, doc_col, record[doc_col])
    label = _label(path, lineno, label_col, record[label_col])
    if not query or not document:
        return None
    return LabelledPair(query, document, label)


def _example_from_record(path: Path, lineno: int, record: dict[str, Any]) -> TrainingExample | None:
    """Build a TrainingExample from a triplet record, or None when the query or positive is empty."""
    for col in ("query", "positive"):
        if col not in record:
            raise DataFormatError(f"{path}:{lineno}: missing column '{col}'")
    query = _text(path, lineno, "query", record["query"])
    positive = _text(path, lineno, "positive", record["positive"])
    neg_col = "negative" if "negative" in record else "negatives"
    raw_negs = record.get(neg_col)
    if raw_negs is None:
        raw_negs = []
    elif isinstance(raw_negs, str):
        raw_negs = [raw_negs]
    elif not isinstance(raw_negs, list):
        raise DataFormatError(
            f"{path}:{lineno}: bad value in column '{neg_col}': expected a string or a list of strings, "
            f"got {type(raw_negs).__name__}"
        )
    negs = [_text(path, lineno, neg_col, value) for value in raw_negs]
    if not query or not positive:
        logger.warning("%s:%d: skipped a row with an empty query or positive", path, lineno)
        return None
    return TrainingExample(query, positive, tuple(dict.fromkeys(n for n in negs if n and n != positive)))


def _text(path: Path, lineno: int, column: str, value: Any) -> str:
    """Return a stripped text value, or raise naming the column when it is not a string."""
    if not isinstance(value, str):
        raise DataFormatError(
            f"{path}:{lineno}: bad value in column '{column}': expected text, "
            f"got {type(value).__name__} {_short(value)}"
        )
    return value.strip()


def _label(path: Path, lineno: int, column: str, value: Any) -> int:
    """Parse a 0/1 label from an int, bool, float or string, raising on anything else."""
    parsed: int | None = None
    if isinstance(value, (bool, int, float)) and value in (0, 1):
        parsed = int(value)
    elif isinstance(value, str) and value.strip() in ("0", "1", "0.0", "1.0"):
        parsed = int(float(value.strip()))
    if parsed is None:
        raise DataFormatError(f"{path}:{lineno}: bad value in column '{column}': expected 0 or 1, got {_short(value)}")
    return parsed


def _short(value: Any, limit: int = 60) -> str:
    """Return a repr cut to `limit` characters so an error message stays one readable line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
