"""API keys: admin and search roles, rotated keys, and the routes each role may call."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.api.deps import in_pool
from flywheel.config import Settings
from flywheel.logs import current_context, log_context
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


def test_in_pool_runs_off_the_event_loop_with_the_callers_log_fields() -> None:
    def where() -> tuple[str, dict]:
        return threading.current_thread().name, current_context()

    async def main() -> tuple[str, dict]:
        with log_context(search_id="s1"):
            return await in_pool(pool, where)

    with ThreadPoolExecutor(1, thread_name_prefix="search") as pool:
        name, fields = asyncio.run(main())
    assert name.startswith("search") and fields == {"search_id": "s1"}
