"""Shared fixtures: settings in tmp_path, an open Service, an HTTP client, models and pair files.

Factories and other helpers live in tests/helpers; this file holds only fixtures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.serve.service import Service
from flywheel.util.packaged import packaged_model_path
from tests.helpers.factories import make_documents, quora_pairs
from tests.helpers.tiny_model import build_tiny_model


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's FLYWHEEL_* variables out of the tests, and encode with torch unless a test asks.

    The default backend ("auto") exports every fresh data dir's base to ONNX at its first start, seconds per
    test; tests/models/test_auto_backend.py and tests/system/test_backends.py test that path itself.
    """
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("FLYWHEEL_ENCODER_BACKEND", "torch")


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT as a SentenceTransformer folder: fast where quality does not matter."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 (real quality, loads offline)."""
    return packaged_model_path()


@pytest.fixture(scope="session")
def guard_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 300 shipped Quora dev pairs: an int8 accuracy guard on a budget (the full shipped set is
    measured once, in tests/models/test_guard.py)."""
    return quora_pairs(tmp_path_factory.mktemp("guard"), 300)


@pytest.fixture
def settings(tmp_path: Path, tiny_model_path: Path) -> Settings:
    """Settings on a fresh data dir with the tiny model and no keys."""
    return Settings(data_dir=tmp_path / "data", base_model=str(tiny_model_path))


@pytest.fixture
def service(settings: Settings) -> Iterator[Service]:
    """An open Service on the settings' data dir."""
    svc = Service.open(settings)
    yield svc
    svc.close()


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    """The real FastAPI app over HTTP (TestClient runs the lifespan, which opens the data dir)."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def loaded_api(api: TestClient) -> TestClient:
    """The API with the small test corpus ingested."""
    response = api.post("/documents", json={"documents": make_documents()})
    assert response.status_code == 200, response.text
    return api
