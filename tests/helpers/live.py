"""Live servers for the client tests: the real API on a loopback port, and a proxy in front that fails on purpose.

The proxy is a real HTTP server: a client sees real 503s, real dropped connections and real slow answers,
and what it forwards is stored by the real API, so a test can count what arrived.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx

from flywheel.api.app import create_app
from flywheel.client import Client
from flywheel.config import Settings
from flywheel.serve.ledger import labelled_rows
from flywheel.serve.store import Store
from flywheel.util.files import utcnow
from tests.helpers.factories import make_documents
from tests.helpers.server import ServerProcess, free_port, serve_in_thread


@contextmanager
def live_api(data_dir: Path, model: Path, documents: list[dict] | None = None) -> Iterator[str]:
    """The real app with the tiny model under uvicorn on a free port, with the small corpus; yields its URL."""
    settings = Settings(data_dir=data_dir, base_model=str(model))
    with serve_in_thread(create_app(settings)) as url:
        response = httpx.post(f"{url}/documents", json={"documents": documents or make_documents()}, timeout=60)
        assert response.status_code == 200, response.text
        yield url


class FlakyProxy:
    """Forwards to `upstream`, except that each request to a path first takes the next planned action:

    - "503": answer 503 without forwarding;
    - "drop": close the connection without an answer (the client sees a transport error);
    - "lost": forward (so the server stores it), then answer 503 (an answer lost after the commit);
    - "slow": wait `slow_s` seconds, then forward.
    """

    def __init__(self, upstream: str, port: int | None = None, slow_s: float = 1.0) -> None:
        """Start it on `port` (default: a free one)."""
        self.upstream = httpx.Client(base_url=upstream, timeout=60)
        self.plans: dict[str, list[str]] = defaultdict(list)
        self.seen: list[tuple[str, str, str]] = []  # (method, path, action) per request received
        self.slow_s = slow_s
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet: the tests read `seen`
                pass

            def handle_any(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with proxy.lock:
                    plan = proxy.plans[self.path]
                    action = plan.pop(0) if plan else "pass"
                    proxy.seen.append((self.command, self.path, action))
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "503":
                    return self.answer(503, json.dumps({"detail": "planned failure"}).encode())
                if action == "slow":
                    time.sleep(proxy.slow_s)
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                response = proxy.upstream.request(self.command, self.path, content=body, headers=headers)
                if action == "lost":
                    return self.answer(503, json.dumps({"detail": "answer lost after the commit"}).encode())
                self.answer(response.status_code, response.content)

            def answer(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = do_DELETE = handle_any

        self.server = ThreadingHTTPServer(("127.0.0.1", port or free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="flaky-proxy", daemon=True)
        self.thread.start()

    def plan(self, path: str, *actions: str) -> None:
        """Queue actions for the next requests to `path`."""
        with self.lock:
            self.plans[path].extend(actions)

    def calls(self, path: str) -> list[str]:
        """The actions taken for each request to `path` so far."""
        with self.lock:
            return [action for _, p, action in self.seen if p == path]

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()
        self.upstream.close()


def start_flywheel(data_dir: Path, model: Path, documents: list[dict] | None = None) -> ServerProcess:
    """`flywheel serve` as a child process with the tiny model, loaded with `documents` (default: the small
    corpus); stop it with `.stop()`."""
    env = {**os.environ, "FLYWHEEL_BASE_MODEL": str(model), "HF_HUB_OFFLINE": "1"}
    server = ServerProcess(data_dir, env)
    with Client(server.url) as client:
        docs = documents or make_documents()
        for start in range(0, len(docs), 256):
            client.upsert_documents(docs[start : start + 256])
    return server


def labelled(data_dir: Path) -> list[tuple]:
    """The rows a cycle mines, read from a data dir no server holds: (search_id, query, doc_id, positive,
    negative, search time, rank) per shown document with a signal."""
    store = Store(data_dir / "flywheel.duckdb")
    try:
        return labelled_rows(store, utcnow(), None)
    finally:
        store.close()


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll `predicate` until it is true or `timeout` seconds passed; returns its last value."""
    deadline = time.monotonic() + timeout
    while not (ok := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return bool(ok)
