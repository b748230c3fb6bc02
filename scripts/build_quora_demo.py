"""Rebuild flywheel/data/quora/demo/ (the demo's BEIR-style retrieval set) from the shared Quora train pool.

    python scripts/build_quora_demo.py [--pairs ../shared/data/quora_duplicate_questions/train_pool.jsonl.gz]

Deterministic (no randomness beyond sha1 orderings); see flywheel/data/quora/SOURCE.md, "demo/".
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PAIRS = ROOT.parent / "shared" / "data" / "quora_duplicate_questions" / "train_pool.jsonl.gz"
OUT = ROOT / "flywheel" / "data" / "quora" / "demo"
SALT = "flywheel-demo-v1:"


def _order(key: str) -> str:
    return hashlib.sha1((SALT + key).encode()).hexdigest()


Judgements = list[tuple[str, str]]


def build(pairs_path: Path, corpus_size: int, max_queries: int) -> tuple[dict[str, str], dict[str, str], Judgements]:
    """(queries, corpus, qrels) from the raw-text pairs of a Quora pair file."""
    with gzip.open(pairs_path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    # Raw Quora text only (the BiMPM rows are CoreNLP-tokenised); pairs of a question with itself teach nothing.
    rows = [r for r in rows if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    text: dict[str, str] = {}
    for r in rows:
        text.setdefault(r["qkey1"], r["question1"])
        text.setdefault(r["qkey2"], r["question2"])
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for r in rows:
        if r["is_duplicate"] == 1:
            parent[find(r["qkey1"])] = find(r["qkey2"])
    clusters: dict[str, list[str]] = defaultdict(list)
    for key in list(parent):
        clusters[find(key)].append(key)
    # Each duplicate cluster gives one query (its member first in sha1 order); the others are its answers.
    groups = sorted((sorted(m, key=_order) for m in clusters.values() if len(m) >= 2), key=lambda m: _order(m[0]))
    # Fewer queries keep the corpus small enough to embed twice (ingest, re-embed) within the demo's budget.
    groups = groups[:max_queries]
    queries = {m[0]: text[m[0]] for m in groups}
    qrels = [(m[0], doc) for m in groups for doc in m[1:]]
    corpus_ids = {doc for _, doc in qrels}
    # The rest of the corpus: other train-pool questions (many are Quora's "related" non-duplicates).
    used = {k for m in groups for k in m}
    fill = sorted((k for k in text if k not in used), key=_order)
    corpus_ids.update(fill[: max(0, corpus_size - len(corpus_ids))])
    corpus = {k: text[k] for k in sorted(corpus_ids, key=_order)}
    return queries, corpus, qrels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--corpus-size", type=int, default=5500)
    parser.add_argument("--max-queries", type=int, default=3500)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    queries, corpus, qrels = build(args.pairs, args.corpus_size, args.max_queries)
    args.out.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same input gives byte-identical files.
    with gzip.GzipFile(args.out / "queries.jsonl.gz", "wb", mtime=0) as fh:
        fh.write("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()).encode())
    with gzip.GzipFile(args.out / "corpus.jsonl.gz", "wb", mtime=0) as fh:
        rows = (json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in corpus.items())
        fh.write("".join(rows).encode())
    with gzip.GzipFile(args.out / "qrels.tsv.gz", "wb", mtime=0) as fh:
        fh.write(("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels)).encode())
    print(f"{len(queries)} queries, {len(corpus)} documents, {len(qrels)} judgements -> {args.out}")


if __name__ == "__main__":
    main()
