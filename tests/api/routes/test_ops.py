"""The ops routes: /healthz, /stats and /livez."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.helpers.factories import CORPUS


def test_healthz_and_stats(loaded_api: TestClient) -> None:
    health = {"status": "ok", "model_version": "v1", "documents": len(CORPUS), "encoder_backend": "torch"}
    assert loaded_api.get("/healthz").json() == health
