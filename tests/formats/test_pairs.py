"""Pair files: every accepted format, the labelled -> training conversion, and precise format errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from flywheel.errors import DataFormatError
from flywheel.formats.pairs import examples_from_labelled, load_labelled_pairs, load_training_examples
from flywheel.types import LabelledPair, TrainingExample

QUORA_TSV = (
    "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
    "0\t1\t2\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
    '1\t3\t4\t"A question with a ""quote"" and\na newline"\tHow do I cook rice?\t0\n'
    "2\t5\t6\tWhy is the sky blue?\t\t0\n"
)
EXPECTED_TSV = [
    LabelledPair("How do I learn Python?", "What is the best way to learn Python?", 1),
    LabelledPair('A question with a "quote" and\na newline', "How do I cook rice?", 0),
]


def write_jsonl(path: Path, rows: list[dict], compress: bool = False) -> Path:
    """Write rows as JSONL, gzipped when asked."""
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if compress:
        with gzip.open(path, "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_quora_jsonl_gz_and_query_document_jsonl_load_the_same_pairs(tmp_path: Path) -> None:
    """Both JSONL schemas, plain or gzipped, give identical LabelledPairs (extra keys ignored)."""
    quora = [
        {"question1": " q one ", "question2": "d one", "is_duplicate": 1, "pair_uid": "x"},
        {"question1": "q two", "question2": "d two", "is_duplicate": 0, "text_form": "raw"},
    ]
    generic = [
        {"query": "q one", "document": "d one", "label": "1"},
        {"query": "q two", "document": "d two", "label": 0},
    ]
    expected = [LabelledPair("q one", "d one", 1), LabelledPair("q two", "d two", 0)]
    assert load_labelled_pairs(write_jsonl(tmp_path / "a.jsonl.gz", quora, compress=True)) == expected
    assert load_labelled_pairs(write_jsonl(tmp_path / "b.jsonl", generic)) == expected


@pytest.mark.parametrize("name,delimiter,compress", [("q.tsv", "\t", False), ("q.csv.gz", ",", True)])
def test_original_quora_release_tsv_and_csv(tmp_path: Path, name: str, delimiter: str, compress: bool) -> None:
    """The Quora TSV/CSV (quoted fields with newlines, an empty question) loads; the empty row is skipped."""
    text = QUORA_TSV
    if delimiter == ",":
        text = text.replace(",", ";").replace("\t", ",")
    path = tmp_path / name
    if compress:
        with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    assert load_labelled_pairs(path) == EXPECTED_TSV


def test_triplet_jsonl_with_string_and_list_negatives(tmp_path: Path) -> None:
    """`negative` may be a string, a list or absent; duplicates and the positive itself are dropped."""
    rows = [
        {"query": "q1", "positive": "p1", "negative": "n1"},
        {"query": "q2", "positive": "p2", "negative": ["n2", "n3", "n2", "p2"]},
        {"query": "q3", "positive": "p3"},
    ]
    assert load_training_examples(write_jsonl(tmp_path / "t.jsonl", rows)) == [
        TrainingExample("q1", "p1", ("n1",)),
        TrainingExample("q2", "p2", ("n2", "n3")),
        TrainingExample("q3", "p3", ()),
    ]


def test_labelled_pairs_become_triplets_with_every_negative_of_the_query() -> None:
    """Each positive of a query carries all that query's negatives; a negatives-only query yields nothing."""
    pairs = [
        LabelledPair("q", "skip1", 0),
        LabelledPair("q", "click1", 1),
        LabelledPair("q", "skip2", 0),
        LabelledPair("q", "click2", 1),
        LabelledPair("q", "click1", 0),  # clicked elsewhere: stays a positive, never a negative
        LabelledPair("lonely", "skip", 0),
        LabelledPair("r", "r", 1),  # a text paired with itself teaches nothing
        LabelledPair("r", "hit", 1),
    ]
    assert examples_from_labelled(pairs) == [
        TrainingExample("q", "click1", ("skip1", "skip2")),
        TrainingExample("q", "click2", ("skip1", "skip2")),
        TrainingExample("r", "hit", ()),
    ]


def test_load_training_examples_converts_a_labelled_file(tmp_path: Path) -> None:
    """A Quora-style file goes through the same conversion: duplicates are positives of question1."""
    rows = [
        {"question1": "a", "question2": "a dup", "is_duplicate": 1},
        {"question1": "a", "question2": "a other", "is_duplicate": 0},
        {"question1": "b", "question2": "b other", "is_duplicate": 0},
    ]
    examples = load_training_examples(write_jsonl(tmp_path / "l.jsonl", rows))
    assert examples == [TrainingExample("a", "a dup", ("a other",))]


@pytest.mark.parametrize(
    "rows,message",
    [
        (
            [{"question1": "a", "question2": "b", "is_duplicate": 1}, {"question1": "a", "question2": "b"}],
            r":2: missing column 'is_duplicate'",
        ),
        (
            [{"query": "a", "document": "b", "label": 1}, {"query": "a", "document": "b", "label": 2}],
            r":2: bad value in column 'label': expected 0 or 1, got 2",
        ),
        ([{"text": "a"}], r":1: missing column 'question1' \(or 'query'\)"),
        ([{"query": "a", "document": 3, "label": 1}], r":1: bad value in column 'document': expected text"),
    ],
)
def test_wrong_jsonl_names_file_line_and_column(tmp_path: Path, rows: list[dict], message: str) -> None:
    """Each malformed line raises DataFormatError with file, line number and column."""
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataFormatError, match=message) as info:
        load_labelled_pairs(path)
    assert str(path) in str(info.value)


def test_invalid_json_and_bad_triplets_are_located(tmp_path: Path) -> None:
    """Broken JSON, a triplet row without `positive` and a non-list negative each name their line."""
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"query": "a", "document": "b", "label": 1}\n\n{"query": "a",\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"broken.jsonl:3: not valid JSON"):
        load_labelled_pairs(broken)
    triplets = write_jsonl(tmp_path / "t.jsonl", [{"query": "a", "positive": "b"}, {"query": "c", "negative": "d"}])
    with pytest.raises(DataFormatError, match=r"t.jsonl:2: missing column 'positive'"):
        load_training_examples(triplets)
    typed = write_jsonl(tmp_path / "n.jsonl", [{"query": "a", "positive": "b", "negative": {"x": 1}}])
    with pytest.raises(DataFormatError, match=r"n.jsonl:1: bad value in column 'negative'"):
        load_training_examples(typed)


def test_wrong_tsv_header_row_width_and_missing_file(tmp_path: Path) -> None:
    """A TSV without the Quora columns, a short row, and a missing file all raise DataFormatError."""
    header = tmp_path / "h.tsv"
    header.write_text("id\tq1\tq2\tlabel\n0\ta\tb\t1\n", encoding="utf-8")
    message = r"h.tsv:1: header lacks column\(s\) question1, question2, is_duplicate \(or query, document, label\)"
    with pytest.raises(DataFormatError, match=message + "; found: id, q1, q2, label"):
        load_labelled_pairs(header)
    short = tmp_path / "s.tsv"
    short.write_text(QUORA_TSV.splitlines()[0] + "\n0\t1\t2\tonly a question\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"s.tsv:2: expected 6 fields"):
        load_labelled_pairs(short)
    with pytest.raises(DataFormatError, match=r"nope.jsonl: no such file"):
        load_labelled_pairs(tmp_path / "nope.jsonl")
