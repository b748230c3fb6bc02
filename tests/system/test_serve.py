"""`flywheel serve` as a real process, on both embedded engines: acknowledged events survive kill -9, an answered
search is written within its flush window, and the CLI talks to it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from tests.helpers.factories import make_documents, make_event
from tests.helpers.server import ServerProcess

pytestmark = pytest.mark.slow


@pytest.fixture(params=["edge", "local"])
def env(request: pytest.FixtureRequest, tiny_model_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLYWHEEL_BASE_MODEL": str(tiny_model_path),
        "HF_HUB_OFFLINE": "1",
        "FLYWHEEL_QDRANT_ENGINE": request.param,
    }


@pytest.fixture
def server_factory(tmp_path: Path, env: dict[str, str]) -> Iterator:
    started: list[ServerProcess] = []

    def start() -> ServerProcess:
        server = ServerProcess(tmp_path / "data", env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def test_acknowledged_event_survives_kill_9(server_factory) -> None:
    server = server_factory()
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.post("/documents", json={"documents": make_documents()}).status_code == 200
    hits = http.post("/search", json={"query": "learn python", "k": 3}).json()
    events = [make_event(hits["search_id"], h["doc_id"], "skip") for h in hits["hits"]]
    assert http.post("/feedback", json={"events": events}).json() == {"accepted": 3, "duplicates": 0}
    server.kill9()

    server = server_factory()
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/stats").json() == {"documents": 8, "searches": 1, "impressions": 3, "events": 3}
    assert http.post("/feedback", json={"events": events}).json() == {"accepted": 0, "duplicates": 3}
    assert http.get("/healthz").json()["model_version"] == "v1"


def test_an_answered_search_survives_kill_9_before_its_flush(server_factory) -> None:
    server = server_factory()
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.post("/documents", json={"documents": make_documents()}).status_code == 200
    hits = http.post("/search", json={"query": "learn python", "k": 3}).json()
    server.kill9()  # well within FLYWHEEL_SEARCH_LOG_FLUSH_MS: the search is only in memory and its journal

    server = server_factory()
    http = httpx.Client(base_url=server.url, timeout=30)
    assert http.get("/stats").json()["searches"] == 1
    event = make_event(hits["search_id"], hits["hits"][0]["doc_id"], "click")
    assert http.post("/feedback", json={"events": [event]}).json() == {"accepted": 1, "duplicates": 0}


def test_cli_goes_through_the_running_server(server_factory, tmp_path: Path, monkeypatch) -> None:
    server = server_factory()
    monkeypatch.setenv("FLYWHEEL_PORT", str(server.port))
    corpus = tmp_path / "more.jsonl"
    corpus.write_text('{"id": "x1", "text": "brand new document"}\n{"id": "x2", "text": "another one"}\n')
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(corpus), "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert "running server" in result.output and "upserted 2 documents" in result.output
    stats = runner.invoke(app, ["stats", "--data-dir", str(tmp_path / "data")])
    assert stats.exit_code == 0 and "│ 2 " in stats.output
    assert httpx.get(f"{server.url}/stats").json()["documents"] == 2
