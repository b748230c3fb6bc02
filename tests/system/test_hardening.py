"""Hostile and careless clients against the real app over HTTP: each test forces one way the server used to
break (nesting, metrics growth, rebinding and cross-origin posts, ids with slashes, limits, conflicts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.cycle.runner import CycleRunner
from flywheel.models.registry import ModelVersion, Registry
from flywheel.types import Document
from flywheel.util.files import now_iso
from tests.helpers.factories import make_documents, make_event

ADMIN, SEARCH_KEY = "adm", "srch"
# A request over TCP from a browser on this machine: the peer is loopback whatever the Host header says.
LOOPBACK_PEER = ("127.0.0.1", 50123)


def nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def keyed_settings(tmp_path: Path, tiny_model_path: Path, **extra: Any) -> Settings:
    return Settings(
        data_dir=tmp_path / "k",
        base_model=str(tiny_model_path),
        admin_keys=[ADMIN],
        search_keys=[SEARCH_KEY],
        **extra,
    )


# --- nested metadata; failed searches log nothing ---------------------------------------------------------


@pytest.mark.parametrize("depth", [40, 300, 600])
def test_deeply_nested_metadata_is_refused_naming_the_document(api: TestClient, depth: int) -> None:
    docs = [{"id": "fine", "text": "fine text"}, {"id": "deep-doc", "text": "hello", "metadata": nested(depth)}]
    response = api.post("/documents", json={"documents": docs})
    assert response.status_code == 422, response.text[:300]
    assert "deep-doc" in response.text and "32" in response.text
    assert api.get("/stats").json()["documents"] == 0  # all or nothing


def test_metadata_nesting_up_to_the_cap_is_stored_and_searchable(api: TestClient) -> None:
    response = api.post("/documents", json={"documents": [{"id": "ok", "text": "hello", "metadata": nested(31)}]})
    assert response.status_code == 200, response.text
    assert api.post("/search", json={"query": "hello"}).json()["hits"][0]["metadata"] == nested(31)


def test_a_search_that_cannot_be_answered_writes_no_log_rows(settings: Settings) -> None:
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        # What an older server let in: a document whose metadata cannot be serialised into an answer.
        api.app.state.service.upsert_documents([Document("old-deep", "hello world", nested(300))])
        before = api.get("/stats").json()
        response = api.post("/search", json={"query": "hello world"})
        assert response.status_code == 500
        assert api.get("/stats").json() == before


# --- document checks: UTF-8 bytes, control characters ---------------------------------------------------


def test_metadata_limit_counts_utf8_bytes(api: TestClient) -> None:
    wide = {"t": "東" * 3000}  # 3,000 characters, 9,000 bytes as UTF-8 JSON: over the default 8,192
    response = api.post("/documents", json={"documents": [{"id": "cjk", "text": "t", "metadata": wide}]})
    assert response.status_code == 422, response.text
    assert "bytes" in response.json()["detail"]
    narrow = {"t": "東" * 2000}
    assert api.post("/documents", json={"documents": [{"id": "cjk", "text": "t", "metadata": narrow}]}).is_success


@pytest.mark.parametrize("char", ["\x1b", "\x07", "\x7f", "\x0c"])
def test_document_text_with_control_characters_is_refused_like_a_query(api: TestClient, char: str) -> None:
    docs = [{"id": "fine", "text": "tabs\tand\nnewlines\r\nare fine"}, {"id": "bad", "text": f"a{char}b"}]
    response = api.post("/documents", json={"documents": docs})
    assert response.status_code == 422, response.text
    assert "documents[1]" in response.text and "control character" in response.text
    assert api.post("/search", json={"query": f"a{char}b"}).status_code == 422
    assert api.post("/documents", json={"documents": docs[:1]}).status_code == 200


def test_mis_decoded_c1_punctuation_is_indexed_and_searchable(api: TestClient) -> None:
    # U+0096 is how a cp1252 en dash arrives when decoded as Latin-1: common in real corpora (SciFact has it).
    text = "ratio 1\x962 in mice"
    assert api.post("/documents", json={"documents": [{"id": "c1", "text": text}]}).status_code == 200
    hits = api.post("/search", json={"query": "ratio 1\x962"}).json()["hits"]
    assert hits[0]["doc_id"] == "c1" and hits[0]["text"] == text


# --- /metrics stays bounded -------------------------------------------------------------------------------


def _series(api: TestClient) -> list[str]:
    return [line for line in api.get("/metrics").text.splitlines() if line and not line.startswith("#")]


def test_made_up_methods_and_paths_do_not_grow_metrics(api: TestClient) -> None:
    api.request("FOO", "/x")
    api.get("/no/such/path")
    _series(api)  # the scrape's own series exist from here on
    before = _series(api)
    for i, method in enumerate(["BAR", "BAZ", "PROPFIND", "QUUX", "foo", "GeT"]):
        assert api.request(method, f"/made-up-{i}").status_code in (404, 405)
        api.get(f"/other/{i}/path")
    after = _series(api)
    grown = sorted(set(after) - set(before), key=str)
    assert len(after) == len(before), grown
    assert any('method="other"' in line and 'route="unmatched"' in line for line in after)
    assert not any(re.search(r'method="(FOO|BAR|BAZ|PROPFIND|QUUX|foo|GeT)"', line) for line in after)


# --- without keys: loopback Host names only, no foreign Origin --------------------------------------------


@pytest.mark.parametrize("host", ["rebind.example:8000", "rebind.example", "10.0.0.5:8000", "localhost.evil.com"])
def test_without_keys_a_foreign_host_is_refused(settings: Settings, host: str) -> None:
    with TestClient(create_app(settings), base_url=f"http://{host}", client=LOOPBACK_PEER) as api:
        response = api.get("/models")
        assert response.status_code == 400, response.text
        assert "Host" in response.json()["detail"]
        assert api.post("/cycles", json={}).status_code == 400
        assert api.app.state.runner.list() == []


@pytest.mark.parametrize("host", ["localhost:8000", "127.0.0.1:8000", "[::1]:8000", "app.localhost", "127.0.0.2"])
def test_without_keys_loopback_hosts_are_served(settings: Settings, host: str) -> None:
    with TestClient(create_app(settings), base_url=f"http://{host}", client=LOOPBACK_PEER) as api:
        assert api.get("/healthz").status_code == 200
        same_origin = {"origin": f"http://{host}"}
        assert api.post("/search", json={"query": "hi"}, headers=same_origin).status_code == 200


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1.evil.example"])
def test_without_keys_a_cross_origin_post_is_refused(settings: Settings, origin: str) -> None:
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000", client=LOOPBACK_PEER) as api:
        # What a web page can send without a preflight: a text/plain POST with an empty body.
        response = api.post("/cycles", content=b"", headers={"content-type": "text/plain", "origin": origin})
        assert response.status_code == 403, response.text
        assert "Origin" in response.json()["detail"]
        assert api.app.state.runner.list() == []


def test_with_keys_the_host_is_not_checked(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = keyed_settings(tmp_path, tiny_model_path)
    with TestClient(create_app(settings), base_url="http://search.example.com", client=("10.1.2.3", 5)) as api:
        headers = {"Authorization": f"Bearer {SEARCH_KEY}", "origin": "https://chat.example.com"}
        assert api.get("/healthz", headers=headers).status_code == 200


# --- ids with slashes -------------------------------------------------------------------------------------


def test_a_document_id_with_slashes_can_be_deleted(api: TestClient) -> None:
    docs = [{"id": "faq/1", "text": "first"}, {"id": "a/b/c", "text": "second"}, {"id": "faq", "text": "third"}]
    assert api.post("/documents", json={"documents": docs}).status_code == 200
    assert api.delete("/documents/faq/1").status_code == 204
    assert api.delete("/documents/a%2Fb%2Fc").status_code == 204
    assert api.delete("/documents/faq/1").status_code == 404
    assert api.get("/stats").json()["documents"] == 1
    hits = api.post("/search", json={"query": "first second third", "k": 10}).json()["hits"]
    assert [h["doc_id"] for h in hits] == ["faq"]
    assert 'route="/documents/{doc_id}"' in api.get("/metrics").text  # the template label did not change


# --- openapi docs setting ---------------------------------------------------------------------------------


def test_openapi_docs_can_be_closed(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = keyed_settings(tmp_path, tiny_model_path, openapi_docs=False)
    with TestClient(create_app(settings)) as api:
        for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
            assert api.get(path).status_code in (401, 404), path
            assert api.get(path, headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 404, path
        assert api.get("/livez").status_code == 200


# --- models without paths ---------------------------------------------------------------------------------


def test_models_hides_server_paths_from_search_keys(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = keyed_settings(tmp_path, tiny_model_path)
    with TestClient(create_app(settings)) as api:
        as_search = api.get("/models", headers={"Authorization": f"Bearer {SEARCH_KEY}"})
        assert as_search.status_code == 200
        assert str(tiny_model_path) not in as_search.text and str(tmp_path) not in as_search.text
        assert as_search.json()["versions"][0]["base_model"] == tiny_model_path.name
        as_admin = api.get("/models", headers={"Authorization": f"Bearer {ADMIN}"})
        assert str(tiny_model_path) in as_admin.text


# --- event id conflicts -----------------------------------------------------------------------------------


def test_an_event_id_resent_with_other_content_is_a_409_naming_it(loaded_api: TestClient) -> None:
    search = loaded_api.post("/search", json={"query": "python", "k": 3}).json()
    first, second = (h["doc_id"] for h in search["hits"][:2])
    event = make_event(search["search_id"], first, "click", ts="2024-05-01T12:00:00Z")
    assert loaded_api.post("/feedback", json={"events": [event]}).json() == {"accepted": 1, "duplicates": 0}
    assert loaded_api.post("/feedback", json={"events": [event]}).json() == {"accepted": 0, "duplicates": 1}
    fresh = make_event(search["search_id"], second, "skip")
    for changed in ({"type": "skip"}, {"doc_id": second}, {"ts": "2020-01-01T00:00:00Z"}):
        response = loaded_api.post("/feedback", json={"events": [fresh, {**event, **changed}]})
        assert response.status_code == 409, (changed, response.text)
        assert event["event_id"] in response.json()["detail"] and "events[1]" in response.json()["detail"]
    twice = [fresh, {**fresh, "type": "click"}]  # the same id twice in one batch, with different content
    assert loaded_api.post("/feedback", json={"events": twice}).status_code == 409
    assert loaded_api.get("/stats").json()["events"] == 1  # nothing of the refused batches was stored


def test_an_event_resent_with_its_timestamp_is_still_a_duplicate(loaded_api: TestClient) -> None:
    search = loaded_api.post("/search", json={"query": "python", "k": 3}).json()
    event = make_event(search["search_id"], search["hits"][0]["doc_id"], ts="2024-05-01T12:00:00+02:00")
    assert loaded_api.post("/feedback", json={"events": [event]}).json()["accepted"] == 1
    same = {**event, "ts": "2024-05-01T10:00:00Z"}  # the same instant, written in UTC
    assert loaded_api.post("/feedback", json={"events": [same]}).json() == {"accepted": 0, "duplicates": 1}
    untimed = {k: v for k, v in event.items() if k != "ts"}  # an omitted ts matches the stored one
    assert loaded_api.post("/feedback", json={"events": [untimed]}).json() == {"accepted": 0, "duplicates": 1}
    later = make_event(search["search_id"], search["hits"][1]["doc_id"])  # stored without a ts ...
    assert loaded_api.post("/feedback", json={"events": [later]}).json()["accepted"] == 1
    timed = {**later, "ts": "2024-05-01T12:00:00Z"}  # ... so a copy that gives one still matches
    assert loaded_api.post("/feedback", json={"events": [timed]}).json() == {"accepted": 0, "duplicates": 1}


# --- recovery from the registry ---------------------------------------------------------------------------


def test_recovery_keeps_a_cycle_whose_model_the_registry_promoted(settings: Settings, tiny_model_path: Path) -> None:
    with TestClient(create_app(settings)) as api:
        assert api.post("/documents", json={"documents": make_documents()}).status_code == 200
        service = api.app.state.service
        # A cycle that promoted its candidate in the registry, then the process died before recording it.
        runner = CycleRunner(service)
        runner.ledger.acquire("c-promoted", "api", "full", None)
        runner.update("c-promoted", state="running", stage="swap")
        registry: Registry = service.registry
        version, _ = registry.allocate()
        window = {"start": None, "end": "2030-01-02T03:04:05+00:00"}
        registry.save(
            ModelVersion(
                version=version,
                kind="finetune",
                base_model=str(tiny_model_path),
                created_at=now_iso(),
                dimension=service.encoder.dimension,
                parent="v1",
                model=str(tiny_model_path),
                made_by={"how": "fine-tuned", "cycle_id": "c-promoted", "window": window},
            )
        )
        registry.promote(version)
    with TestClient(create_app(settings)) as api:  # the restart
        record = api.get("/cycles/c-promoted").json()
        assert record["state"] == "promoted", record
        assert record["candidate"] == version and record["finished_at"] is not None
        assert api.get("/healthz").json()["model_version"] == version
        assert api.app.state.runner.last_window_end() is not None


def test_recovery_still_fails_a_cycle_whose_model_was_not_promoted(settings: Settings) -> None:
    with TestClient(create_app(settings)) as api:
        runner = CycleRunner(api.app.state.service)
        runner.ledger.acquire("c-cut", "api", "full", None)
        runner.update("c-cut", state="running", stage="train")
    with TestClient(create_app(settings)) as api:
        record = api.get("/cycles/c-cut").json()
        assert record["state"] == "failed" and "interrupted" in record["error"]
