"""Shared fixtures: settings in tmp_path, an open Service, an HTTP client, models, and event factories."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.serve.service import Service
from flywheel.util.packaged import packaged_model_path
from tests._tiny_model import build_tiny_model

CORPUS = [
    ("d1", "How do I learn Python quickly?"),
    ("d2", "What is the best way to learn Python programming?"),
    ("d3", "How can I lose weight fast?"),
    ("d4", "What are healthy ways to lose weight?"),
    ("d5", "Which is the best laptop for programming?"),
    ("d6", "How do I cook rice in a pot?"),
    ("d7", "What is the capital of France?"),
    ("d8", "Why is the sky blue?"),
]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep a developer's FLYWHEEL_* variables out of the tests."""
    for name in list(os.environ):
        if name.startswith("FLYWHEEL_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT as a SentenceTransformer folder: fast where quality does not matter."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def minilm_path() -> str:
    """The packaged all-MiniLM-L6-v2 (real quality, loads offline)."""
    return packaged_model_path()


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


def make_documents(items: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """Factory: API document bodies from (id, text) pairs (default: the small test corpus)."""
    return [{"id": i, "text": t, "metadata": {"n": n}} for n, (i, t) in enumerate(items or CORPUS)]


_event_ids = itertools.count()


def make_event(search_id: str, doc_id: str, type: str = "click", **extra: Any) -> dict[str, Any]:
    """Factory: one feedback event body with a fresh event_id."""
    return {"event_id": f"e{next(_event_ids)}", "search_id": search_id, "doc_id": doc_id, "type": type, **extra}


# A small world the tiny model's vocabulary knows: a query is relevant to the documents of its topic.
TOPICS = "python pasta car paris phone weight money guitar dog garden rain planet cake bike hotel piano".split()
DOC_TEMPLATES = ["the best {t} guide", "good {t} tips", "how {t} works"]
QUERY_TEMPLATES = [
    "how do i {t}",
    "what is the best {t}",
    "where can i find {t}",
    "why is {t} good",
    "which {t} is good",
    "can you help with {t}",
    "my {t} is bad",
    "when to {t}",
]


def world_documents() -> list[dict[str, Any]]:
    """Factory: the topic world's documents (API bodies, topic in metadata)."""
    return [
        {"id": f"{t}-{i}", "text": tpl.format(t=t), "metadata": {"topic": t}}
        for t in TOPICS
        for i, tpl in enumerate(DOC_TEMPLATES)
    ]


def world_queries() -> tuple[dict[str, str], dict[str, set[str]]]:
    """Factory: the topic world's queries and their relevant documents."""
    queries, relevant = {}, {}
    for t in TOPICS:
        for j, tpl in enumerate(QUERY_TEMPLATES):
            queries[f"{t}-q{j}"] = tpl.format(t=t)
            relevant[f"{t}-q{j}"] = {f"{t}-{i}" for i in range(len(DOC_TEMPLATES))}
    return queries, relevant


@pytest.fixture
def loaded_api(api: TestClient) -> TestClient:
    """The API with the small test corpus ingested."""
    response = api.post("/documents", json={"documents": make_documents()})
    assert response.status_code == 200, response.text
    return api
