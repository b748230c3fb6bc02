"""A real uvicorn server in a background thread of the test process (real HTTP, real sockets, many clients)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_thread(app: FastAPI, timeout: float = 60) -> Iterator[str]:
    """Run `app` (lifespan included) with uvicorn in a thread; yield its base URL; stop it afterwards.

    Args:
        app: the FastAPI app.
        timeout: seconds to wait for start-up.

    Yields:
        "http://127.0.0.1:<port>".
    """
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


# `python -c KILL_IN_SWAP serve ...`: flywheel serve that SIGKILLs itself right after the Qdrant alias moved to a
# candidate, before the encoder switch and the registry's promotion: the worst moment of a swap.
KILL_IN_SWAP = """
import os, signal, sys
from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.index import Index
def killing(point_alias):
    def wrapped(self, version):
        point_alias(self, version)
        if version != "v1":
            os.kill(os.getpid(), signal.SIGKILL)
    return wrapped
Index.point_alias = killing(Index.point_alias)
EdgeIndex.point_alias = killing(EdgeIndex.point_alias)
from flywheel.cli import main
sys.argv[0] = "flywheel"
main()
"""


def second_version(service: Any, model_dir: Path, query: str, k: int = 5) -> tuple[Any, Any, dict[str, list]]:
    """Give a serving tiny-model service a visibly different "v2" with its own complete collection.

    Returns:
        (v1 encoder, v2 encoder, {version: [(doc_id, rounded score)] each version finds for `query`}), the
        answers a search during swaps must match for the version it reports.
    """
    import torch

    from flywheel.models.encoder import Encoder
    from flywheel.models.loading import load_model
    from flywheel.types import Document
    from tests.helpers.factories import world_documents
    from tests.helpers.tiny_model import build_tiny_model

    v1 = service.encoder
    model = load_model(str(build_tiny_model(model_dir)), "cpu")
    torch.manual_seed(0)
    for weights in model.parameters():  # same shape, visibly different answers
        weights.data.add_(torch.randn_like(weights) * 0.5)
    v2 = Encoder("v2", model)
    service.index.create("v2", v2.dimension)
    service.embed_into("v2", v2, [Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
    expected = {}
    for encoder in (v1, v2):
        hits = service.index.search(encoder.encode([query])[0], k, collection=service.index.collection(encoder.version))
        expected[encoder.version] = [(h.doc_id, round(h.score, 4)) for h in hits]
    return v1, v2, expected


class ServerProcess:
    """`flywheel serve` in a child process on a free port (optionally with injected code, see KILL_IN_SWAP)."""

    def __init__(self, data_dir: Path, env: dict[str, str], inject: str | None = None, timeout: float = 120) -> None:
        """Start it and wait until /livez answers."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        entry = ["-c", inject] if inject else ["-m", "flywheel"]
        # A file, not a pipe: nobody reads a pipe while the test runs, and a full pipe blocks the server.
        self.log = data_dir.parent / f"server-{self.port}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *entry, "serve", "--data-dir", str(data_dir), "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/livez", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not start")
            time.sleep(0.2)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's output."""
        return self.log.read_text(errors="replace")[-chars:]

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), if it still runs."""
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
