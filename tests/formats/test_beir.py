"""BEIR folders: flat or split layout, gzip or not, and errors that name the file, line and column."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from flywheel.errors import DataFormatError
from flywheel.formats.beir import load_beir, read_qrels

CORPUS = [
    {"_id": "d1", "title": "Python", "text": "learn it fast"},
    {"_id": "d2", "text": "cook rice"},
    {"_id": "d3", "text": "sky"},
]
QUERIES = [
    {"_id": "q1", "text": "how to learn python"},
    {"_id": "q2", "text": "rice"},
    {"_id": "q3", "text": "unjudged"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\td3\t0\n"


def _write(path: Path, text: str, compress: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wt", encoding="utf-8") as fh:
            fh.write(text)
    else:
        path.write_text(text, encoding="utf-8")


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def make_folder(root: Path, compress: bool = False, split: str | None = None, qrels: str = QRELS) -> Path:
    """A BEIR folder: flat (qrels.tsv, queries.jsonl) or split (qrels/<split>.tsv, queries_<split>.jsonl)."""
    _write(root / "corpus.jsonl", _jsonl(CORPUS), compress)
    _write(root / (f"queries_{split}.jsonl" if split else "queries.jsonl"), _jsonl(QUERIES), compress)
    _write(root / ("qrels" if split else "") / (f"{split}.tsv" if split else "qrels.tsv"), qrels, compress)
    return root


@pytest.mark.parametrize(("compress", "split"), [(False, None), (True, None), (False, "train"), (True, "test")])
def test_layouts_load_the_same_set(tmp_path: Path, compress: bool, split: str | None) -> None:
    data = load_beir(make_folder(tmp_path / "b", compress, split))
    assert [(d.id, d.text) for d in data.corpus] == [
        ("d1", "Python\nlearn it fast"),
        ("d2", "cook rice"),
        ("d3", "sky"),
    ]
    assert data.queries == {"q1": "how to learn python", "q2": "rice"}  # q3 has no judgement
    assert data.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "d3": 0}}
    assert data.relevant == {"q1": {"d1"}, "q2": {"d2"}}  # score 0 is judged not relevant


def test_split_is_chosen_when_several_exist(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "b", split="train")
    _write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq2\td2\t1\n", False)
    _write(root / "queries.jsonl", _jsonl(QUERIES), False)
    with pytest.raises(DataFormatError, match=r"several qrels splits \(test, train\); choose one"):
        load_beir(root)
    assert load_beir(root, split="test").qrels == {"q2": {"d2": 1}}
    assert set(load_beir(root, split="train").queries) == {"q1", "q2"}


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("query-id\tdoc\tscore\nq1\td1\t1\n", r"qrels.tsv:1: header lacks column\(s\) corpus-id; found: query-id, doc"),
        ("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\thigh\n", r"qrels.tsv:3: bad value in column 'score'"),
        ("query-id\tcorpus-id\tscore\nq1\td1\n", r"qrels.tsv:2: expected 3 fields"),
        ("query-id\tcorpus-id\tscore\nq1\td9\t1\n", r"1 judged document\(s\) are not in the corpus, e.g. \['d9'\]"),
    ],
)
def test_bad_qrels_name_file_line_and_column(tmp_path: Path, qrels: str, message: str) -> None:
    with pytest.raises(DataFormatError, match=message):
        load_beir(make_folder(tmp_path / "b", qrels=qrels))


def test_missing_files_and_bad_query_lines(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match="no such folder"):
        load_beir(tmp_path / "nope")
    root = make_folder(tmp_path / "b")
    (root / "qrels.tsv").unlink()
    with pytest.raises(DataFormatError, match=r"no qrels.tsv and no qrels/<split>.tsv"):
        load_beir(root)
    root = make_folder(tmp_path / "c")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "ok"}\n{"_id": "q2"}\n')
    with pytest.raises(DataFormatError, match=r"queries.jsonl:2: needs '_id' and a non-empty 'text'"):
        load_beir(root)
    (root / "corpus.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"no corpus.jsonl"):
        load_beir(root)


def test_read_qrels_gzip(tmp_path: Path) -> None:
    _write(tmp_path / "q.tsv", QRELS, compress=True)
    assert read_qrels(tmp_path / "q.tsv.gz")["q2"] == {"d2": 2, "d3": 0}
