"""examples/chatbot end to end: the chat runs as a user would run it, on shipped SciFact abstracts behind a live
`flywheel serve`; questions go in, sources come out, clicks and thumbs are stored, and mining (a cycle's first
stage) turns them into the pairs the next model is trained on."""

from __future__ import annotations

import gzip
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flywheel.cycle.mining import mine_pairs
from flywheel.formats.corpus import read_documents
from flywheel.serve.store import Store
from flywheel.util.packaged import SCIFACT_WORLD
from flywheel.util.text import normalise_query
from tests.helpers.live import start_flywheel
from tests.helpers.paths import ROOT

pytestmark = pytest.mark.slow
SOURCE_LINE = re.compile(r"^  \[(\d)\] -?\d\.\d{3}  (\S+)  ", re.M)


def shipped(n: int) -> tuple[list[dict], list[str]]:
    """The first `n` shipped abstracts (in two parts, "a" and "b", for the filter) and three shipped claims."""
    docs = [
        {"id": d.id, "text": d.text, "metadata": {"part": "ab"[i % 2]}}
        for i, d in enumerate(itertools.islice(read_documents(SCIFACT_WORLD / "corpus.jsonl.gz"), n))
    ]
    with gzip.open(SCIFACT_WORLD / "queries.jsonl.gz", "rt") as fh:
        claims = [json.loads(line)["text"] for line in itertools.islice(fh, 3)]
    return docs, claims


def test_questions_in_feedback_stored_pairs_mined(tmp_path: Path, tiny_model_path: Path) -> None:
    docs, (q1, q2, q3) = shipped(300)
    server = start_flywheel(tmp_path / "data", tiny_model_path, docs)
    try:
        # ask, open the second source; ask, thumbs-down; ask, open the first and thumbs-up; then a bad position
        script = f"{q1}\n2\n{q2}\n-\n{q3}\n1 +\n7\nquit\n"
        run = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "chatbot" / "chat.py"), "--url", server.url, "--filter", "part=a"],
            input=script,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        server.stop()
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    answers = [line for line in out.splitlines() if line.startswith("answer: ")]
    assert len(answers) == 3 and q1 in answers[0]  # the stand-in model repeats its prompt: question and sources
    shown = [SOURCE_LINE.findall(block) for block in out.split("answer: ")[1:]]
    assert [[rank for rank, _ in s] for s in shown] == [["1", "2", "3"]] * 3
    part = {d["id"]: d["metadata"]["part"] for d in docs}
    assert {part[doc_id] for s in shown for _, doc_id in s} == {"a"}  # --filter reached the search
    assert "opened [2]" in out and "is not a source: use 1..3" in out
    assert "3 questions, 2 clicks, 2 ratings" in out
    assert "feedback: 8 events sent, 0 not stored" in out  # 1 click, 3 thumbs-down, 1 click + 3 thumbs-up

    store = Store(tmp_path / "data" / "flywheel.duckdb")
    try:
        mined = mine_pairs(store)
    finally:
        store.close()
    labels = {(p.group, p.doc_id): p.label for p in mined.pairs}
    (r1, r2), ids2, ids3 = [d for _, d in shown[0][:2]], [d for _, d in shown[1]], [d for _, d in shown[2]]
    g1, g2, g3 = (normalise_query(q) for q in (q1, q2, q3))
    assert labels[(g1, r2)] == 1 and labels[(g1, r1)] == 0  # the click, and the source skipped above it
    assert [labels[(g2, d)] for d in ids2] == [0, 0, 0]  # a thumbs-down on every cited source
    assert [labels[(g3, d)] for d in ids3] == [1, 1, 1]  # a click and a thumbs-up
    assert mined.counts["searches"] == 3 and mined.counts["pairs"] == 8
