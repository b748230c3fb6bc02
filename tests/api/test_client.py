"""The sync Python client against the real API over HTTP: the old surface, error mapping, and retries through a
proxy that fails on purpose (503s, dropped connections, an answer lost after the commit, a late server)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.api.client import Client as ApiClient
from flywheel.client import Client, Retry
from flywheel.errors import FlywheelError, InvalidInput, NotFound, ServerUnavailable
from tests.helpers.live import FlakyProxy, live_api
from tests.helpers.server import free_port

FAST = Retry(attempts=4, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[str]:
    with live_api(tmp_path_factory.mktemp("client") / "data", tiny_model_path) as base:
        yield base


@pytest.fixture
def proxy(url: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(url)
    yield flaky
    flaky.close()


def test_the_old_surface_keeps_working(url: str) -> None:
    assert Client is ApiClient  # `from flywheel.client import Client` is the same class the CLI uses
    assert list(inspect.signature(Client).parameters)[:3] == ["base_url", "api_key", "timeout"]
    assert list(inspect.signature(Client.search).parameters)[:4] == ["self", "query", "k", "filter"]
    client = Client(url, None)
    assert client.upsert_documents([{"id": "extra-1", "text": "learn python the hard way", "metadata": {"n": 99}}])
    result = client.search("learn python", k=3, filter={"n": [0, 1, 99]}, user_id="u1")
    assert {h["doc_id"] for h in result["hits"]} <= {"d1", "d2", "extra-1"} and result["hits"]
    event = {"event_id": "old-1", "search_id": result["search_id"], "doc_id": result["hits"][0]["doc_id"]}
    assert client.feedback([{**event, "type": "click"}]) == {"accepted": 1, "duplicates": 0}
    assert client.request("GET", "/stats")["events"] >= 1 and client.stats()["documents"] >= 9
    assert client.health()["status"] == "ok"
    client.close()


def test_events_without_an_id_get_one_and_datetimes_are_sent(url: str) -> None:
    from datetime import UTC, datetime

    with Client(url) as client:
        hits = client.search("lose weight", k=2)
        events = [
            {"search_id": hits["search_id"], "doc_id": h["doc_id"], "type": "skip", "ts": datetime.now(UTC)}
            for h in hits["hits"]
        ]
        assert client.feedback(events) == {"accepted": 2, "duplicates": 0}
        assert all("event_id" not in e for e in events)  # the caller's dicts are not changed


def test_errors_come_back_as_flywheel_exceptions(url: str) -> None:
    with Client(url, retry=FAST) as client:
        with pytest.raises(InvalidInput, match="HTTP 422"):
            client.feedback([{"search_id": "no-such-search", "doc_id": "d1", "type": "click"}])
        with pytest.raises(NotFound, match="HTTP 404"):
            client.delete_document("never/was")
        client.upsert_documents([{"id": "faq/1", "text": "an id with a slash"}])
        client.delete_document("faq/1")  # quoted in the path, found
        with pytest.raises(InvalidInput):
            client.search("", k=3)


def test_feedback_is_retried_through_503_and_a_dropped_connection(url: str, proxy: FlakyProxy) -> None:
    with Client(url) as direct, Client(proxy.url, retry=FAST) as client:
        hits = client.search("cook rice", k=2)
        before = direct.stats()["events"]
        proxy.plan("/feedback", "503", "drop")
        events = [{"search_id": hits["search_id"], "doc_id": h["doc_id"], "type": "skip"} for h in hits["hits"]]
        assert client.feedback(events) == {"accepted": 2, "duplicates": 0}
        assert proxy.calls("/feedback") == ["503", "drop", "pass"]
        assert direct.stats()["events"] == before + 2


def test_an_answer_lost_after_the_commit_is_retried_as_a_duplicate(url: str, proxy: FlakyProxy) -> None:
    with Client(url) as direct, Client(proxy.url, retry=FAST) as client:
        hits = client.search("capital of France", k=1)
        before = direct.stats()["events"]
        proxy.plan("/feedback", "lost")
        event = {"search_id": hits["search_id"], "doc_id": hits["hits"][0]["doc_id"], "type": "click"}
        # the first try was stored; the retry carries the same generated event_id, so it is not stored twice
        assert client.feedback([event]) == {"accepted": 0, "duplicates": 1}
        assert direct.stats()["events"] == before + 1


def test_a_search_is_retried_only_when_asked(url: str, proxy: FlakyProxy) -> None:
    with Client(url) as direct, Client(proxy.url, retry=FAST) as client:
        searches = direct.stats()["searches"]
        proxy.plan("/search", "503")
        with pytest.raises(ServerUnavailable, match="HTTP 503"):
            client.search("sky blue", k=2)
        proxy.plan("/search", "503", "drop")
        assert client.search("sky blue", k=2, retry=True)["hits"]
        assert proxy.calls("/search") == ["503", "503", "drop", "pass"]
        assert direct.stats()["searches"] == searches + 1  # refused tries log nothing


def test_retries_are_bounded_and_can_be_turned_off(url: str, proxy: FlakyProxy) -> None:
    with Client(proxy.url, retry=Retry(attempts=3, backoff=0.01)) as client:
        proxy.plan("/stats", *["503"] * 5)
        with pytest.raises(ServerUnavailable, match="after 3 attempts"):
            client.stats()
        assert proxy.calls("/stats") == ["503"] * 3
    with Client(proxy.url, retry=Retry(attempts=1)) as client:
        with pytest.raises(ServerUnavailable):
            client.stats()
        assert len(proxy.calls("/stats")) == 4
    assert isinstance(ServerUnavailable("x"), FlywheelError)  # callers catching FlywheelError still do


def test_the_client_waits_for_a_server_that_comes_up(url: str) -> None:
    port = free_port()
    started: list[FlakyProxy] = []
    late = threading.Timer(0.4, lambda: started.append(FlakyProxy(url, port=port)))
    late.start()
    try:
        with Client(f"http://127.0.0.1:{port}", retry=Retry(attempts=8, backoff=0.1, max_backoff=0.4)) as client:
            t0 = time.monotonic()
            assert client.stats()["documents"] >= 8
            assert time.monotonic() - t0 >= 0.3  # it really waited for the server
    finally:
        late.join()
        for proxy in started:
            proxy.close()
    nobody = Client(f"http://127.0.0.1:{free_port()}", retry=Retry(attempts=2, backoff=0.01))
    with nobody, pytest.raises(ServerUnavailable, match="cannot reach .* after 2 attempts"):
        nobody.stats()


def test_importing_the_client_loads_no_server_code() -> None:
    """A chatbot imports the client: it must not pull torch, FastAPI, DuckDB or Qdrant."""
    heavy = "('torch', 'fastapi', 'duckdb', 'qdrant_client')"
    code = f"import sys, flywheel.client; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
