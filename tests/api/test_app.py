"""The app around the routes: JSON errors, the request body limit and the OpenAPI page."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings


def test_malformed_json_is_422_naming_where_it_broke(loaded_api: TestClient) -> None:
    response = loaded_api.post("/search", content=b'{"query": "x",', headers={"content-type": "application/json"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["type"], error["msg"], error["loc"]) == ("json_invalid", "JSON decode error", ["body", 14])
    assert loaded_api.get("/stats").json()["searches"] == 0


def test_json_nested_too_deep_to_parse_is_400_and_searches_nothing(loaded_api: TestClient) -> None:
    deep = b'{"query": "x", "k": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = loaded_api.post("/search", content=deep, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"detail": "There was an error parsing the body"}
    assert loaded_api.get("/stats").json()["searches"] == 0


def test_body_over_limit_is_413(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), max_body_bytes=2048)
    with TestClient(create_app(settings)) as api:
        response = api.post("/documents", json={"documents": [{"id": "a", "text": "y" * 5000}]})
        assert response.status_code == 413
        assert "max_body_bytes" in response.json()["detail"] and "2048" in response.json()["detail"]
        assert api.get("/stats").json()["documents"] == 0


def test_docs_and_openapi_list_the_routes(loaded_api: TestClient) -> None:
    assert loaded_api.get("/docs").status_code == 200
    paths = loaded_api.get("/openapi.json").json()["paths"]
    assert {"/documents", "/documents/{doc_id}", "/search", "/feedback", "/healthz", "/stats", "/models"} <= set(paths)


def test_searches_are_answered_by_a_pool_of_the_configured_size(tmp_path: Path, tiny_model_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), search_workers=3)
    with TestClient(create_app(settings)) as api:
        pool = api.app.state.search_pool
        assert pool._max_workers == 3
        api.post("/documents", json={"documents": [{"id": "a", "text": "how to learn python"}]})
        assert api.post("/search", json={"query": "python", "k": 1}).json()["hits"][0]["doc_id"] == "a"
        # The search route's one dependency keeps the key check visible to OpenAPI clients.
        assert api.get("/openapi.json").json()["paths"]["/search"]["post"]["security"] == [{"HTTPBearer": []}]
    assert pool._shutdown  # closed with the app: no thread outlives the store it writes to
    assert Settings(data_dir=tmp_path / "e").search_threads >= 2
