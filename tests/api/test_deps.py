"""API keys: admin and search roles, rotated keys, and the routes each role may call."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.factories import make_documents, make_event


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
