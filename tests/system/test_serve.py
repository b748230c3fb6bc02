"""`flywheel serve` as a real process: acknowledged events survive kill -9, and the CLI talks to it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from tests.helpers.factories import make_documents, make_event

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m flywheel serve` child process on a free port."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "serve", "--data-dir", str(data_dir), "--port", str(self.port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.3)
        raise TimeoutError("server did not start")

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def env(tiny_model_path: Path) -> dict[str, str]:
    return {**os.environ, "FLYWHEEL_BASE_MODEL": str(tiny_model_path), "HF_HUB_OFFLINE": "1"}


@pytest.fixture
def server_factory(tmp_path: Path, env: dict[str, str]) -> Iterator:
    started: list[Server] = []

    def start() -> Server:
        server = Server(tmp_path / "data", env)
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
