"""The HTTP contract: documents, search, feedback, health/stats/models, auth and every 4xx path."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.api import search
from tests.helpers.factories import CORPUS, make_documents, make_event

# --- documents --------------------------------------------------------------------------------------------


def test_post_documents_counts_and_replaces(api: TestClient) -> None:
    assert api.post("/documents", json={"documents": make_documents()}).json() == {"upserted": len(CORPUS)}
    again = api.post("/documents", json={"documents": [{"id": "d1", "text": "Completely new text about tea"}]})
    assert again.json() == {"upserted": 1}
    assert api.get("/stats").json()["documents"] == len(CORPUS)
    hit = search(api, "Completely new text about tea", k=len(CORPUS))["hits"]
    assert [h for h in hit if h["doc_id"] == "d1"][0]["text"] == "Completely new text about tea"


def test_delete_document_then_404(loaded_api: TestClient) -> None:
    assert loaded_api.delete("/documents/d3").status_code == 204
    assert loaded_api.get("/healthz").json()["documents"] == len(CORPUS) - 1
    ids = {h["doc_id"] for h in search(loaded_api, "lose weight", k=len(CORPUS))["hits"]}
    assert "d3" not in ids and len(ids) == len(CORPUS) - 1
    missing = loaded_api.delete("/documents/d3")
    assert missing.status_code == 404
    assert "d3" in missing.json()["detail"]


# --- search -----------------------------------------------------------------------------------------------


def test_search_contract_and_logging(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3, user_id="u1", session_id="s1")
    assert set(body) == {"search_id", "model_version", "hits"}
    assert body["model_version"] == "v1"
    assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
    assert set(body["hits"][0]) == {"doc_id", "text", "score", "rank", "metadata"}
    scores = [h["score"] for h in body["hits"]]
    assert scores == sorted(scores, reverse=True)
    texts = dict(CORPUS)
    assert all(h["text"] == texts[h["doc_id"]] for h in body["hits"])
    assert loaded_api.get("/stats").json() == {
        "documents": len(CORPUS),
        "searches": 1,
        "impressions": 3,
        "events": 0,
    }


def test_search_default_k_and_fewer_docs_than_k(loaded_api: TestClient) -> None:
    body = loaded_api.post("/search", json={"query": "python"}).json()
    assert len(body["hits"]) == len(CORPUS)  # default k=10, only 8 documents


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
    body = search(loaded_api, "Wie lerne ich Python? 🐍 日本語", k=2)
    assert len(body["hits"]) == 2


def test_malformed_json_is_422(loaded_api: TestClient) -> None:
    response = loaded_api.post("/search", content=b'{"query": "x",', headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert "JSON" in response.text


def test_deep_json_is_4xx(loaded_api: TestClient) -> None:
    deep = b'{"query": "x", "k": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = loaded_api.post("/search", content=deep, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500


def test_body_over_limit_is_413(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_body_bytes=2048)
    with TestClient(create_app(settings)) as api:
        response = api.post("/documents", json={"documents": [{"id": "a", "text": "y" * 5000}]})
        assert response.status_code == 413
        assert "max_body_bytes" in response.json()["detail"]
        assert api.get("/stats").json()["documents"] == 0


def test_batch_over_limit_is_413(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_documents_per_request=3, max_events_per_request=2
    )
    with TestClient(create_app(settings)) as api:
        too_many = api.post("/documents", json={"documents": make_documents()})
        assert too_many.status_code == 413
        assert "limit is 3" in too_many.json()["detail"]
        api.post("/documents", json={"documents": make_documents(CORPUS[:3])})
        sid = search(api, "python", k=2)["search_id"]
        events = [make_event(sid, "d1") for _ in range(3)]
        assert api.post("/feedback", json={"events": events}).status_code == 413
        assert api.get("/stats").json()["events"] == 0


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ({"id": "", "text": "x"}, "at least 1 character"),
        ({"id": "a", "text": "   "}, "blank"),
        ({"id": "a", "text": "x" * 20_001}, "limit is 20000"),
        ({"id": "a" * 300, "text": "x"}, "over 256"),
        ({"id": "a", "text": "x", "metadata": "nope"}, "dictionary"),
        ({"id": "a", "text": "x", "metadata": {"blob": "z" * 9000}}, "metadata"),
        ({"id": "a", "text": "x", "extra": 1}, "Extra inputs"),
    ],
)
def test_documents_reject_bad_input_and_write_nothing(api: TestClient, doc: dict, fragment: str) -> None:
    good = {"id": "ok", "text": "a fine document"}
    response = api.post("/documents", json={"documents": [good, doc]})
    assert response.status_code == 422, response.text
    assert fragment in response.text
    assert api.get("/stats").json()["documents"] == 0


def test_empty_batches_are_422(loaded_api: TestClient) -> None:
    assert loaded_api.post("/documents", json={"documents": []}).status_code == 422
    assert loaded_api.post("/feedback", json={"events": []}).status_code == 422


# --- feedback ---------------------------------------------------------------------------------------------


def test_feedback_accepts_and_deduplicates(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=3)
    sid, shown = body["search_id"], [h["doc_id"] for h in body["hits"]]
    first = make_event(sid, shown[1], "click", ts="2026-01-02T03:04:05+02:00")
    second = make_event(sid, shown[0], "skip")
    response = loaded_api.post("/feedback", json={"events": [first, second, first]})
    assert response.json() == {"accepted": 2, "duplicates": 1}
    again = loaded_api.post("/feedback", json={"events": [first, second]})
    assert again.json() == {"accepted": 0, "duplicates": 2}
    assert loaded_api.get("/stats").json()["events"] == 2


def test_feedback_event_types(loaded_api: TestClient) -> None:
    body = search(loaded_api, "python", k=1)
    doc = body["hits"][0]["doc_id"]
    events = [make_event(body["search_id"], doc, t) for t in ("click", "skip", "thumbs_up", "thumbs_down")]
    assert loaded_api.post("/feedback", json={"events": events}).json()["accepted"] == 4
    bad = loaded_api.post("/feedback", json={"events": [make_event(body["search_id"], doc, "like")]})
    assert bad.status_code == 422
    assert "click" in bad.text


def test_feedback_unknown_search_or_unshown_doc_rejects_whole_batch(loaded_api: TestClient) -> None:
    body = search(loaded_api, "learn python", k=2)
    sid, shown = body["search_id"], {h["doc_id"] for h in body["hits"]}
    not_shown = next(d for d, _ in CORPUS if d not in shown)
    good = make_event(sid, next(iter(shown)))
    bad_doc = make_event(sid, not_shown)
    bad_search = make_event("no-such-search", next(iter(shown)))
    response = loaded_api.post("/feedback", json={"events": [good, bad_doc, bad_search]})
    assert response.status_code == 422
    detail = response.json()["detail"]
    # Quoted as the message quotes them: a bare "e10" can also occur inside a random hex search id.
    named = [f"(event_id '{e['event_id']}')" for e in (good, bad_doc, bad_search)]
    assert named[1] in detail and named[2] in detail
    assert named[0] not in detail
    assert "nothing was stored" in detail
    assert loaded_api.get("/stats").json()["events"] == 0


# --- ops --------------------------------------------------------------------------------------------------


def test_healthz_stats_models(loaded_api: TestClient) -> None:
    health = {"status": "ok", "model_version": "v1", "documents": len(CORPUS), "encoder_backend": "torch"}
    assert loaded_api.get("/healthz").json() == health
    models = loaded_api.get("/models").json()
    assert models["incumbent"]["version"] == "v1"
    assert models["incumbent"]["kind"] == "base"
    assert [h["action"] for h in models["history"]] == ["initial"]
    assert loaded_api.get("/docs").status_code == 200
    paths = loaded_api.get("/openapi.json").json()["paths"]
    assert {"/documents", "/documents/{doc_id}", "/search", "/feedback", "/healthz", "/stats", "/models"} <= set(paths)


# --- auth -------------------------------------------------------------------------------------------------


@pytest.fixture
def keyed_api(tmp_path: Path, tiny_model_path: Path) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "d", base_model=str(tiny_model_path), admin_keys=["adm1", "adm2"], search_keys=["srch"]
    )
    with TestClient(create_app(settings)) as api:
        yield api


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_auth_roles(keyed_api: TestClient) -> None:
    docs = {"documents": make_documents()}
    assert keyed_api.post("/documents", json=docs).status_code == 401
    assert keyed_api.post("/documents", json=docs, headers=_auth("wrong")).status_code == 401
    forbidden = keyed_api.post("/documents", json=docs, headers=_auth("srch"))
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["detail"]
    assert keyed_api.post("/documents", json=docs, headers=_auth("adm2")).status_code == 200  # rotated key
    assert keyed_api.delete("/documents/d1", headers=_auth("srch")).status_code == 403
    assert keyed_api.post("/search", json={"query": "python"}).status_code == 401
    body = keyed_api.post("/search", json={"query": "python", "k": 1}, headers=_auth("srch")).json()
    event = make_event(body["search_id"], body["hits"][0]["doc_id"])
    assert keyed_api.post("/feedback", json={"events": [event]}).status_code == 401
    assert keyed_api.post("/feedback", json={"events": [event]}, headers=_auth("srch")).status_code == 200
    for path in ("/healthz", "/stats", "/models"):
        assert keyed_api.get(path).status_code == 401, path
        assert keyed_api.get(path, headers=_auth("srch")).status_code == 200, path
    assert keyed_api.get("/livez").json() == {"status": "ok"}


# --- end to end with the packaged MiniLM on real Quora questions ------------------------------------------


@pytest.mark.slow
def test_minilm_end_to_end_on_quora(tmp_path: Path, minilm_path: str) -> None:
    """Real model, real data: duplicates of held-out questions are found near the top."""
    import csv
    import gzip
    import io
    import json

    root = Path(__file__).parent.parent / "flywheel" / "data" / "quora" / "dev_retrieval"
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
