"""Rebuild flywheel/data/scifact/ (the SciFact world: corpus, claims, traffic/check judgements) from ../shared.

    python scripts/build_scifact_world.py [--source ../shared/data/beir_scifact] [--out flywheel/data/scifact]

Deterministic: the claims are split by `flywheel.lab.worlds.is_check_query` (a sha1 of the claim's text), and
the gzip files carry no timestamp, so the same input gives byte-identical files. See its SOURCE.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flywheel.lab.worlds import is_check_query  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "beir_scifact"
OUT = ROOT / "flywheel" / "data" / "scifact"
QRELS_HEADER = "query-id\tcorpus-id\tscore\n"


def _write_gz(path: Path, text: str) -> None:
    """Write text gzipped at level 9 with mtime 0 (byte-identical for the same input)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=9, mtime=0) as fh:
        fh.write(text.encode())


def build(source: Path, out: Path) -> dict[str, int]:
    """Write the world's files from the shared BEIR SciFact part; return the counts for SOURCE.md."""
    with gzip.open(source / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    # BEIR's title and text stay apart (flywheel's corpus reader indexes title + "\n" + text); the empty
    # `metadata` objects are dropped.
    corpus = "".join(json.dumps({"_id": d["_id"], "title": d["title"], "text": d["text"]}) + "\n" for d in docs)
    with open(source / "queries_train.jsonl", encoding="utf-8") as fh:
        claims = [json.loads(line) for line in fh]
    texts = {c["_id"]: c["text"].strip() for c in claims}  # the rationale metadata is not needed for retrieval
    qrels: list[tuple[str, str, str]] = []
    with open(source / "qrels" / "train.tsv", encoding="utf-8") as fh:
        next(fh)
        qrels = [tuple(line.rstrip("\n").split("\t")) for line in fh if line.strip()]  # type: ignore[misc]
    check = {qid for qid, text in texts.items() if is_check_query(text)}
    doc_ids = {d["_id"] for d in docs}
    assert all(doc in doc_ids for _, doc, _ in qrels), "a judged document is not in the corpus"
    assert not {texts[q] for q in check} & {texts[q] for q in texts if q not in check}, "a text on both sides"

    _write_gz(out / "corpus.jsonl.gz", corpus)
    _write_gz(out / "queries.jsonl.gz", "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in texts.items()))
    for name, keep in (("traffic", lambda q: q not in check), ("check", lambda q: q in check)):
        rows = "".join(f"{q}\t{d}\t{s}\n" for q, d, s in qrels if keep(q))
        _write_gz(out / "qrels" / f"{name}.tsv.gz", QRELS_HEADER + rows)
    traffic_docs = {d for q, d, _ in qrels if q not in check}
    check_docs = {d for q, d, _ in qrels if q in check}
    return {
        "documents": len(docs),
        "claims": len(texts),
        "traffic_claims": len(texts) - len(check),
        "check_claims": len(check),
        "traffic_judgements": sum(1 for q, _, _ in qrels if q not in check),
        "check_judgements": sum(1 for q, _, _ in qrels if q in check),
        "check_docs_also_relevant_in_traffic": len(check_docs & traffic_docs),
        "check_docs": len(check_docs),
        "check_claims_sharing_a_traffic_doc": len({q for q, d, _ in qrels if q in check and d in traffic_docs}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    for name, value in build(args.source, args.out).items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
