"""kill -9 of `flywheel serve` while a candidate trains and in the middle of the swap: on restart the server
serves the incumbent (never a half-built version), the leftovers are gone, and the next cycle runs normally."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from flywheel.config import Settings
from flywheel.lab.simulate import UserModel, simulate
from flywheel.serve.engine import open_index
from tests.helpers.factories import world_documents, world_queries
from tests.helpers.server import KILL_IN_SWAP, ServerProcess

pytestmark = pytest.mark.slow

MARKER = "FLYWHEEL_FAULT_TEST_MARKER"  # not a setting: pydantic-settings ignores unknown env vars


@pytest.fixture(params=["edge", "local"])
def env(request: pytest.FixtureRequest, tiny_model_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLYWHEEL_QDRANT_ENGINE": request.param,
        "HF_HUB_OFFLINE": "1",
        MARKER: uuid.uuid4().hex,
        "FLYWHEEL_BASE_MODEL": str(tiny_model_path),
        "FLYWHEEL_CYCLE_MODE": "full",  # the faults under test are in training and the re-embedding swap
        # The cycle settings of tests/cycle/test_full.py (the tiny model learns the topic world), with a lenient
        # gate: this test is about faults, not about the promotion decision.
        "FLYWHEEL_TRAIN_LEARNING_RATE": "2e-3",
        "FLYWHEEL_TRAIN_EPOCHS": "2",
        "FLYWHEEL_TRAIN_MAX_STEPS": "12",
        "FLYWHEEL_TRAIN_BATCH_SIZE": "16",
        "FLYWHEEL_MIN_HELDOUT_PAIRS": "10",
        "FLYWHEEL_HELDOUT_PERCENT": "25",
        "FLYWHEEL_GATE_METRIC": "pair_error",  # the seed's gate, made lenient below
        "FLYWHEEL_MIN_IMPROVEMENT": "0",
        "FLYWHEEL_REQUIRE_SIGNIFICANT": "false",
        "FLYWHEEL_MAX_NDCG_DROP": "1",
    }


def marked_processes(marker: str) -> list[int]:
    """Pids of live processes whose environment carries this test's marker (the server and its children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"{MARKER}={marker}".encode() in environ.split(b"\0") and state != "Z":
            pids.append(int(entry.name))
    return pids


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def cycle(http: httpx.Client, cycle_id: str) -> dict:
    return http.get(f"/cycles/{cycle_id}").json()


def test_kill_9_in_training_and_in_the_swap_then_a_normal_cycle(tmp_path: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data, env)
    http = httpx.Client(base_url=server.url, timeout=60)
    assert http.post("/documents", json={"documents": world_documents()}).status_code == 200
    queries, relevant = world_queries()
    user = UserModel(click_prob=1.0, decay=1.0, wrong_click=0, no_click=0)
    assert simulate(http, queries, relevant, user, rounds=1).accepted > 50

    # 1. kill -9 while the candidate trains (in its child process).
    first = http.post("/cycles").json()["cycle_id"]
    wait_until(lambda: cycle(http, first)["stage"] == "train", 120, "the cycle never reached training")
    time.sleep(2)  # the training child is up and working
    server.kill9()
    # The orphaned training child notices its parent is gone and exits instead of finishing into the registry.
    wait_until(lambda: not marked_processes(env[MARKER]), 30, "a training child outlived the server")

    # The restart is a server that will kill itself in the next swap (one start fewer; it behaves normally
    # until the alias moves to a candidate).
    server = ServerProcess(data, env, inject=KILL_IN_SWAP)
    http = httpx.Client(base_url=server.url, timeout=60)
    assert http.get("/healthz").json()["model_version"] == "v1"
    record = cycle(http, first)
    assert record["state"] == "failed" and "interrupted" in record["error"]
    assert sorted(p.name for p in (data / "models").iterdir() if p.name.startswith(".")) == []
    statuses = {v["version"]: v["status"] for v in http.get("/models").json()["versions"]}
    assert statuses["v1"] == "incumbent" and set(statuses.values()) <= {"incumbent", "failed"}

    # 2. kill -9 right after the alias moved to the candidate, before the encoder and registry follow.
    second = http.post("/cycles").json()["cycle_id"]
    assert server.proc.wait(timeout=300) == -9, "the server was not killed in the swap (did the cycle promote?)"
    candidate = max((p.name for p in (data / "models").iterdir() if p.name.startswith("v")), key=lambda n: int(n[1:]))

    server = ServerProcess(data, env)
    http = httpx.Client(base_url=server.url, timeout=60)
    assert http.get("/healthz").json()["model_version"] == "v1"  # the incumbent, alias pointed back at it
    assert http.post("/search", json={"query": "good guitar tips", "k": 3}).json()["model_version"] == "v1"
    assert "flywheel_alias_consistent 1.0" in http.get("/metrics").text
    assert cycle(http, second)["state"] == "failed"
    statuses = {v["version"]: v["status"] for v in http.get("/models").json()["versions"]}
    assert statuses[candidate] == "failed"
    assert [p.name for p in (data / "models" / candidate).iterdir()] == ["meta.json"]  # weights dropped

    # 3. The next cycle runs normally and promotes.
    third = http.post("/cycles").json()["cycle_id"]
    wait_until(lambda: cycle(http, third)["state"] not in ("queued", "running"), 300, "third cycle did not end")
    record = cycle(http, third)
    assert record["state"] == "promoted", http.get(f"/reports/{third}").json().get("reasons")
    assert http.get("/healthz").json()["model_version"] == record["candidate"]
    server.stop()
    index = open_index(Settings(data_dir=data))  # the engine the data dir records (Edge for a new one)
    try:
        versions = index.versions()
    finally:
        index.close()
    assert versions == sorted(["v1", record["candidate"]])
    assert not [p for p in (data / "models").iterdir() if p.name.startswith(".")]
