"""The background feedback batcher, on the real API: `send` never waits, batches go out by size, by time and
on close, a bad event costs only itself, and a dead server is counted, never raised."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.client import Client, Retry
from tests.helpers.live import FlakyProxy, live_api, wait_until
from tests.helpers.server import free_port

FAST = Retry(attempts=3, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[str]:
    with live_api(tmp_path_factory.mktemp("batcher") / "data", tiny_model_path) as base:
        yield base


@pytest.fixture
def proxy(url: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(url, slow_s=1.5)
    yield flaky
    flaky.close()


def shown_events(client: Client, query: str, k: int = 3) -> list[dict]:
    """A search, and one skip event (without an id: the batcher gives one) per hit it showed."""
    result = client.search(query, k=k)
    return [{"search_id": result["search_id"], "doc_id": h["doc_id"], "type": "skip"} for h in result["hits"]]


def stored(url: str) -> int:
    with Client(url) as direct:
        return direct.stats()["events"]


def test_send_returns_at_once_while_the_server_is_slow(url: str, proxy: FlakyProxy) -> None:
    before = stored(url)
    client = Client(proxy.url, retry=FAST, feedback_batch=2, feedback_interval=60)
    events = shown_events(client, "learn python", k=4)
    proxy.plan("/feedback", "slow", "slow")
    t0 = time.monotonic()
    queued = client.feedback.send(events)  # two full batches: the worker starts posting right away
    assert time.monotonic() - t0 < 0.2  # ... and the caller did not wait for a 1.5 s answer
    assert len({e["event_id"] for e in queued}) == 4
    client.close()  # flushes what is queued, waiting for the slow server
    assert stored(url) == before + 4
    assert client.feedback.stats.sent == 4 and client.feedback.stats.pending == 0


def test_a_full_batch_goes_out_without_waiting_for_the_interval(url: str, proxy: FlakyProxy) -> None:
    before = stored(url)
    with Client(proxy.url, retry=FAST, feedback_batch=3, feedback_interval=60) as client:
        events = shown_events(client, "lose weight", k=3)
        client.feedback.send(events[:2])
        time.sleep(0.3)
        assert proxy.calls("/feedback") == []  # two of three: not due yet
        client.feedback.send(events[2])
        assert wait_until(lambda: stored(url) == before + 3, timeout=10)
        assert proxy.calls("/feedback") == ["pass"]  # one POST of three events


def test_a_lone_event_goes_out_when_the_interval_ends(url: str) -> None:
    before = stored(url)
    with Client(url, feedback_batch=100, feedback_interval=0.3) as client:
        client.feedback.send(shown_events(client, "capital of France", k=1))
        t0 = time.monotonic()
        assert wait_until(lambda: stored(url) == before + 1, timeout=10)
        assert time.monotonic() - t0 >= 0.15  # it waited for the interval, not for a flush


def test_leaving_the_context_flushes(url: str) -> None:
    before = stored(url)
    with Client(url, feedback_interval=3600) as client:
        client.feedback.send(shown_events(client, "cook rice", k=2))
        assert stored(url) == before  # nothing is due for an hour
    assert stored(url) == before + 2


def test_a_bad_event_costs_only_itself(url: str) -> None:
    before = stored(url)
    with Client(url, feedback_interval=3600) as client:
        good = shown_events(client, "best laptop for programming", k=4)
        bad = {"search_id": "no-such-search", "doc_id": "d1", "type": "click"}
        client.feedback.send([*good[:2], bad, *good[2:]])
        assert client.feedback.flush(timeout=30)
        stats = client.feedback.stats
    assert stored(url) == before + 4  # the batch was split around the refused event
    assert (stats.sent, stats.rejected, stats.failed) == (4, 1, 0)


def test_a_dead_server_is_counted_never_raised() -> None:
    client = Client(f"http://127.0.0.1:{free_port()}", retry=FAST, feedback_interval=3600, feedback_queue=3)
    events = [{"search_id": "s", "doc_id": f"d{i}", "type": "click"} for i in range(5)]
    t0 = time.monotonic()
    queued = client.feedback.send(events)
    assert time.monotonic() - t0 < 0.2 and len(queued) == 3  # the queue holds 3; 2 are dropped
    assert client.feedback.flush(timeout=30)
    client.close()
    stats = client.feedback.stats
    assert (stats.sent, stats.failed, stats.dropped, stats.pending) == (0, 3, 2, 0)
    assert client.feedback.send(events[0]) == [] and client.feedback.stats.dropped == 3  # closed: dropped


def test_a_retry_inside_the_batcher_rides_over_a_blip(url: str, proxy: FlakyProxy) -> None:
    before = stored(url)
    with Client(proxy.url, retry=FAST, feedback_interval=3600) as client:
        events = shown_events(client, "sky blue", k=2)
        proxy.plan("/feedback", "drop", "lost")
        client.feedback.send(events)
    assert proxy.calls("/feedback") == ["drop", "lost", "pass"]
    assert stored(url) == before + 2 and client.feedback.stats.sent == 2


def test_a_normal_exit_posts_what_is_queued(url: str) -> None:
    """The documented promise: an interpreter that exits without close() still sends its queue."""
    with Client(url) as client:
        event = shown_events(client, "healthy ways to lose weight", k=1)[0]
    before = stored(url)
    script = (
        "import sys; from flywheel.client import Client\n"
        f"client = Client({url!r}, feedback_interval=3600)\n"
        f"client.feedback.send({event!r})\n"
        "sys.exit(0)  # no close(), no flush()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert stored(url) == before + 1
