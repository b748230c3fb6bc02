"""Load a BEIR-style retrieval folder (corpus, queries, qrels; gzip or not) with errors that name file and line.

Layout, as BEIR ships it (and as `/work/shared/data/beir_scifact` has it):

    corpus.jsonl[.gz]                       {"_id", "title"?, "text", "metadata"?}
    queries.jsonl[.gz] or queries_<split>.jsonl[.gz]   {"_id", "text"}
    qrels/<split>.tsv[.gz] or qrels.tsv[.gz]           header: query-id, corpus-id, score
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flywheel.errors import DataFormatError
from flywheel.formats.corpus import read_documents
from flywheel.formats.records import iter_records
from flywheel.types import Document

QREL_COLUMNS = ("query-id", "corpus-id", "score")


@dataclass
class RetrievalSet:
    """Queries with judged relevant documents over a corpus (what simulated users and retrieval metrics need)."""

    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def relevant(self) -> dict[str, set[str]]:
        """Query id -> ids of documents judged relevant (score > 0), for queries that have any."""
        out = {qid: {doc for doc, score in docs.items() if score > 0} for qid, docs in self.qrels.items()}
        return {qid: docs for qid, docs in out.items() if docs}


def load_beir(folder: str | Path, split: str | None = None) -> RetrievalSet:
    """Read a BEIR folder.

    Args:
        folder: The folder with the corpus, queries and qrels files.
        split: Which qrels (and `queries_<split>` file) to use, e.g. "test"; default: the only one there is.

    Returns:
        The corpus (BEIR titles joined to the text, as `flywheel ingest` does), the queries that have
        judgements, and the qrels.

    Raises:
        DataFormatError: A file is missing or ambiguous, or a line is wrong; the message names file and line.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataFormatError(f"{folder}: no such folder")
    qrels_path = _qrels_file(folder, split)
    split = split or (qrels_path.name.split(".")[0] if qrels_path.parent.name == "qrels" else None)
    queries_path = _first(folder, [f"queries_{split}"] if split else [], "queries")
    corpus = list(read_documents(_first(folder, [], "corpus")))
    qrels = read_qrels(qrels_path)
    known = {doc.id for doc in corpus}
    queries: dict[str, str] = {}
    for line, row in iter_records(queries_path, columns=(), kind="jsonl"):
        qid, text = row.get("_id", row.get("id")), row.get("text")
        if qid is None or not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{queries_path}:{line}: needs '_id' and a non-empty 'text'")
        if str(qid) in qrels:
            queries[str(qid)] = text.strip()
    missing = sorted({doc for docs in qrels.values() for doc in docs} - known)
    if missing:
        raise DataFormatError(
            f"{qrels_path}: {len(missing)} judged document(s) are not in the corpus, e.g. {missing[:3]}"
        )
    if not queries:
        raise DataFormatError(f"{queries_path}: no query has a judgement in {qrels_path}")
    return RetrievalSet(corpus, queries, {qid: qrels[qid] for qid in queries})


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a qrels TSV (header `query-id`, `corpus-id`, `score`) into query id -> {doc id: score}.

    Raises:
        DataFormatError: Missing column or a score that is not an integer; names file and line.
    """
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for line, row in iter_records(path, columns=(QREL_COLUMNS,), kind="tsv"):
        try:
            score = int(row["score"])
        except ValueError:
            raise DataFormatError(f"{path}:{line}: bad value in column 'score': expected an integer") from None
        qrels.setdefault(row["query-id"].strip(), {})[row["corpus-id"].strip()] = score
    return qrels


def _qrels_file(folder: Path, split: str | None) -> Path:
    """The qrels file for a split: qrels/<split>.tsv[.gz], or qrels.tsv[.gz], or the only one in qrels/."""
    if split:
        return _first(folder / "qrels", [], split)
    flat = _existing(folder, "qrels")
    if flat:
        return flat
    found = sorted((folder / "qrels").glob("*.tsv*")) if (folder / "qrels").is_dir() else []
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataFormatError(f"{folder}: no qrels.tsv and no qrels/<split>.tsv")
    names = ", ".join(p.name.split(".")[0] for p in found)
    raise DataFormatError(f"{folder}: several qrels splits ({names}); choose one with split=")


def _first(folder: Path, preferred: list[str], stem: str) -> Path:
    """The first of `<name>.jsonl`/`.tsv` (optionally .gz) that exists, or an error naming what was looked for."""
    for name in [*preferred, stem]:
        found = _existing(folder, name)
        if found:
            return found
    raise DataFormatError(f"{folder}: no {' or '.join(f'{n}.jsonl/.tsv[.gz]' for n in [*preferred, stem])}")


def _existing(folder: Path, name: str) -> Path | None:
    for suffix in (".jsonl", ".jsonl.gz", ".tsv", ".tsv.gz"):
        path = folder / f"{name}{suffix}"
        if path.is_file():
            return path
    return None
