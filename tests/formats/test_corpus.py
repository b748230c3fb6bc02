"""Corpus files: JSONL, CSV, TSV, gzip, BEIR rows, and errors that name the file and line."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from flywheel.errors import DataFormatError
from flywheel.formats.corpus import batched, read_documents


def test_jsonl_gz_and_beir(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        fh.write('{"id": "a", "text": "hello", "metadata": {"x": 1}}\n\n')
        fh.write('{"_id": "b", "title": "T", "text": "body"}\n')
    docs = list(read_documents(path))
    assert [(d.id, d.text, d.metadata) for d in docs] == [("a", "hello", {"x": 1}), ("b", "T\nbody", {})]


def test_csv_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text('id,text,metadata\n1,"one, two","{""lang"": ""en""}"\n2,three,\n')
    docs = list(read_documents(path))
    assert [(d.id, d.text, d.metadata) for d in docs] == [("1", "one, two", {"lang": "en"}), ("2", "three", {})]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.jsonl", '{"id": "a", "text": "x"}\n{"id": "b"}\n', "c.jsonl:2: missing or empty column 'text'"),
        ("c.jsonl", '{"id": "a", "text": "x"}\nnot json\n', "c.jsonl:2: not valid JSON"),
        ("c.csv", "key,text\n1,x\n", "header lacks column(s) id"),
        ("c.csv", "id,text,metadata\n1,x,{oops\n", "c.csv:2: column 'metadata' is not valid JSON"),
        ("c.parquet", "", "unknown file type"),
        ("c.tsv", "id\ttext\n1\tok\n2\n", "c.tsv:3: expected 2 fields (id, text), got 1"),
        ("c.jsonl", '{"id": "a", "text": "x"}\n["a"]\n', "c.jsonl:2: expected a JSON object, got list"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataFormatError) as info:
        list(read_documents(path))
    assert message in str(info.value)


def test_batched() -> None:
    assert [len(b) for b in batched(iter(range(7)), 3)] == [3, 3, 1]
