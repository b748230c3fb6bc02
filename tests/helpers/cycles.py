"""Driving cycles through the HTTP API: users who click the right topic, and waiting for a cycle to end."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from flywheel.lab.simulate import UserModel, simulate
from tests.helpers.factories import world_queries

# Users who click the first hit of the right topic and skip the hits above it.
PERFECT_USER = UserModel(click_prob=1.0, decay=1.0, wrong_click=0, no_click=0)


def simulate_users(api: TestClient, rounds: int = 2) -> int:
    """Every topic-world query asked `rounds` times by perfect users; returns the accepted events."""
    queries, relevant = world_queries()
    return simulate(api, queries, relevant, PERFECT_USER, rounds=rounds).accepted


def wait_for(api: TestClient, cycle_id: str, timeout: float = 600) -> dict:
    """Poll GET /cycles/{id} until the cycle ends; the record gets "stages_seen"."""
    deadline = time.monotonic() + timeout
    seen = set()
    while time.monotonic() < deadline:
        record = api.get(f"/cycles/{cycle_id}").json()
        seen.add(record["stage"])
        if record["state"] not in ("queued", "running"):
            record["stages_seen"] = seen
            return record
        time.sleep(0.5)
    raise TimeoutError(cycle_id)
