"""The async client on the real API: the same calls, errors and retries as the sync one, and its batcher task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flywheel.client import AsyncClient, Client, Retry
from flywheel.errors import InvalidInput, NotFound, ServerUnavailable
from tests.helpers.live import FlakyProxy, live_api
from tests.helpers.server import free_port

FAST = Retry(attempts=4, backoff=0.01, max_backoff=0.05)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[str]:
    with live_api(tmp_path_factory.mktemp("async-client") / "data", tiny_model_path) as base:
        yield base


@pytest.fixture
def proxy(url: str) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(url, slow_s=1.0)
    yield flaky
    flaky.close()


def stored(url: str) -> dict[str, int]:
    with Client(url) as direct:
        return direct.stats()


def test_calls_and_errors_match_the_sync_client(url: str) -> None:
    async def main() -> None:
        async with AsyncClient(url, retry=FAST) as client:
            assert await client.upsert_documents([{"id": "a-1", "text": "async python", "metadata": {"n": 70}}]) == 1
            result = await client.search("python", k=2, filter={"n": 70})
            assert [h["doc_id"] for h in result["hits"]] == ["a-1"]
            event = {"search_id": result["search_id"], "doc_id": "a-1", "type": "thumbs_up"}
            assert await client.feedback([event]) == {"accepted": 1, "duplicates": 0}
            assert (await client.health())["status"] == "ok" and (await client.stats())["documents"] >= 9
            with pytest.raises(InvalidInput, match="HTTP 422"):
                await client.feedback([{**event, "search_id": "nope"}])
            await client.delete_document("a-1")
            with pytest.raises(NotFound):
                await client.delete_document("a-1")

    asyncio.run(main())


def test_retries_feedback_and_opt_in_searches(url: str, proxy: FlakyProxy) -> None:
    before = stored(url)

    async def main() -> None:
        async with AsyncClient(proxy.url, retry=FAST) as client:
            proxy.plan("/search", "drop")
            with pytest.raises(ServerUnavailable):
                await client.search("learn python", k=2)
            proxy.plan("/search", "503")
            result = await client.search("learn python", k=2, retry=True)
            proxy.plan("/feedback", "503", "lost")
            events = [{"search_id": result["search_id"], "doc_id": h["doc_id"], "type": "skip"} for h in result["hits"]]
            assert await client.feedback(events) == {"accepted": 0, "duplicates": 2}  # stored by the lost try

    asyncio.run(main())
    after = stored(url)
    assert proxy.calls("/search") == ["drop", "503", "pass"] and proxy.calls("/feedback") == ["503", "lost", "pass"]
    assert (after["searches"], after["events"]) == (before["searches"] + 1, before["events"] + 2)


def test_the_batcher_task_never_blocks_and_flushes_on_exit(url: str, proxy: FlakyProxy) -> None:
    before = stored(url)["events"]

    async def main() -> tuple[float, object]:
        async with AsyncClient(proxy.url, retry=FAST, feedback_interval=3600) as client:
            result = await client.search("lose weight", k=3)
            good = [{"search_id": result["search_id"], "doc_id": h["doc_id"], "type": "skip"} for h in result["hits"]]
            proxy.plan("/feedback", "slow")
            t0 = time.monotonic()
            queued = client.feedback.send([good[0], {"search_id": "nope", "doc_id": "d1", "type": "click"}, *good[1:]])
            waited = time.monotonic() - t0
            await client.feedback.flush()
            client.feedback.send(queued[0])  # the same event_id again: a duplicate, posted on exit
        return waited, client.feedback.stats

    waited, stats = asyncio.run(main())
    assert waited < 0.1
    assert stored(url)["events"] == before + 3
    assert (stats.sent, stats.rejected, stats.failed, stats.pending) == (4, 1, 0, 0)


def test_a_dead_server_is_counted_not_raised() -> None:
    async def main() -> object:
        client = AsyncClient(f"http://127.0.0.1:{free_port()}", retry=FAST, feedback_interval=0.05)
        client.feedback.send([{"search_id": "s", "doc_id": "d", "type": "click"}] * 2)
        await client.aclose()
        return client.feedback.stats

    stats = asyncio.run(main())
    assert (stats.sent, stats.failed, stats.pending) == (0, 2, 0)
