"""POST /search: the answer's contract and logging, default k, input checks, unicode, and MiniLM on Quora."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.util.packaged import DATA_DIR
from tests.helpers.api import brute_force_ranking, ids_and_scores, search
from tests.helpers.factories import CORPUS


def test_search_contract_and_logging(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3, user_id="u1", session_id="s1")
    assert set(body) == {"search_id", "model_version", "hits"}
    assert body["model_version"] == "v1"
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    assert set(body["hits"][0]) == {"doc_id", "text", "score", "rank", "metadata"}
    ids, scores = ids_and_scores(body)
    expected = brute_force_ranking(loaded_api.app.state.service, "learn python", 3)
    assert ids == [d for d, _ in expected]  # the three nearest documents, nearest first
    assert scores == pytest.approx([s for _, s in expected], abs=1e-5)
    texts = dict(CORPUS)
    assert all(h["text"] == texts[h["doc_id"]] for h in body["hits"])
    assert loaded_api.get("/stats").json() == {
        "documents": len(CORPUS),
        "searches": 1,
        "impressions": 3,
        "events": 0,
    }
    store = loaded_api.app.state.service.store
    assert store.query("SELECT query, k, model_version, user_id, session_id FROM searches") == [
        ("learn python", 3, "v1", "u1", "s1")
    ]
    impressions = "SELECT rank, doc_id FROM impressions WHERE search_id = ? ORDER BY rank"
    assert store.query(impressions, [body["search_id"]]) == [(1, ids[0]), (2, ids[1]), (3, ids[2])]


def test_search_default_k_and_fewer_docs_than_k(loaded_api: TestClient) -> None:
    body = loaded_api.post("/search", json={"query": "python"}).json()
    # default k=10, only 8 documents: every document, in the order of its cosine to the query
    expected = brute_force_ranking(loaded_api.app.state.service, "python", 10)
    assert len(expected) == len(CORPUS)
    assert ids_and_scores(body) == ([d for d, _ in expected], pytest.approx([s for _, s in expected], abs=1e-5))
    assert [h["rank"] for h in body["hits"]] == list(range(1, len(CORPUS) + 1))


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"query": ""}, "empty"),
        ({"query": "   "}, "empty"),
        ({"query": "x" * 2001}, "limit is 2000"),
        ({"query": "ok", "k": 0}, "between 1 and 100"),
        ({"query": "ok", "k": 101}, "between 1 and 100"),
        ({"query": "ok", "k": 10**12}, "between 1 and 100"),
        ({"query": "ok", "k": "10"}, "integer"),
        ({"query": 5}, "string"),
        ({"query": "ok", "colour": "red"}, "Extra inputs"),
        ({"k": 3}, "Field required"),
        ({"query": "bad\x00byte"}, "control characters"),
    ],
)
def test_search_rejects_bad_input(loaded_api: TestClient, payload: dict, fragment: str) -> None:
    response = loaded_api.post("/search", json=payload)
    assert response.status_code == 422, response.text
    assert fragment in response.text


def test_search_accepts_unicode(loaded_api: TestClient) -> None:
    query = "Wie lerne ich Python? 🐍 日本語"
    body = search(loaded_api, query, k=2)
    expected = brute_force_ranking(loaded_api.app.state.service, query, 2)
    assert ids_and_scores(body) == ([d for d, _ in expected], pytest.approx([s for _, s in expected], abs=1e-5))
    store = loaded_api.app.state.service.store
    assert store.query("SELECT query FROM searches WHERE search_id = ?", [body["search_id"]]) == [(query,)]


@pytest.mark.slow
def test_minilm_end_to_end_on_quora(tmp_path: Path, minilm_path: str) -> None:
    """Real model, real data: duplicates of held-out questions are found near the top."""
    import csv
    import gzip
    import io
    import json

    root = DATA_DIR / "quora" / "dev_retrieval"
    with gzip.open(root / "queries.jsonl.gz", "rt") as fh:
        queries = [json.loads(line) for line in fh][:40]
    with gzip.open(root / "qrels.tsv.gz", "rt") as fh:
        qrels = list(csv.DictReader(io.StringIO(fh.read()), delimiter="\t"))
    with gzip.open(root / "corpus.jsonl.gz", "rt") as fh:
        corpus = [json.loads(line) for line in fh]
    relevant: dict[str, set[str]] = {}
    for row in qrels:
        relevant.setdefault(row["query-id"], set()).add(row["corpus-id"])
    wanted = set().union(*(relevant[q["_id"]] for q in queries))
    docs = [d for d in corpus if d["_id"] in wanted] + [d for d in corpus if d["_id"] not in wanted][:400]

    settings = Settings(data_dir=tmp_path / "d", base_model=minilm_path)
    with TestClient(create_app(settings)) as api:
        for start in range(0, len(docs), 200):
            batch = [{"id": d["_id"], "text": d["text"]} for d in docs[start : start + 200]]
            assert api.post("/documents", json={"documents": batch}).status_code == 200
        reciprocal = []
        for q in queries:
            hits = search(api, q["text"], k=10)["hits"]
            ranks = [h["rank"] for h in hits if h["doc_id"] in relevant[q["_id"]]]
            reciprocal.append(1 / ranks[0] if ranks else 0.0)
        stats = api.get("/stats").json()
    assert stats["searches"] == len(queries) and stats["documents"] == len(docs)
    mrr = sum(reciprocal) / len(reciprocal)
    assert mrr > 0.6, f"MRR@10 {mrr:.2f} is too low for MiniLM on Quora duplicates"
