"""GET /models: the incumbent and the promotion history."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_models_lists_the_base_incumbent_and_its_history(loaded_api: TestClient) -> None:
    models = loaded_api.get("/models").json()
    assert models["incumbent"]["version"] == "v1"
    assert models["incumbent"]["kind"] == "base"
    assert [h["action"] for h in models["history"]] == ["initial"]
