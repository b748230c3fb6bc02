"""The async twin of `flywheel.api.client.Client` (httpx.AsyncClient): the same calls, retries and errors."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import httpx

from flywheel.api.batcher import AsyncFeedbackBatcher, BatcherStats, Events
from flywheel.api.client_core import Retry, auth_headers, feedback_body, outcome, retry_for, search_body


class AsyncFeedback:
    """`await client.feedback(events)` posts now; `client.feedback.send(events)` (no await) queues them for
    a background task and returns at once."""

    def __init__(self, client: AsyncClient, batcher: AsyncFeedbackBatcher) -> None:
        """Args: client: the client that posts; batcher: its background queue."""
        self.client = client
        self.batcher = batcher

    async def __call__(self, events: list[dict[str, Any]]) -> dict[str, int]:
        """POST /feedback now, retried on connection errors and 5xx; returns {"accepted", "duplicates"}."""
        return await self.client.request("POST", "/feedback", json=feedback_body(events), retry=True)

    def send(self, events: dict[str, Any] | list[dict[str, Any]]) -> Events:
        """Queue one event or a list (call it from the event loop); returns the queued events with their ids."""
        return self.batcher.send(events)

    async def flush(self) -> None:
        """Post what is queued and wait until it is settled."""
        await self.batcher.flush()

    @property
    def stats(self) -> BatcherStats:
        """Sent, rejected, failed, dropped and pending event counts of the batcher."""
        return self.batcher.stats

    async def aclose(self) -> None:
        """Flush and stop the batcher's task."""
        await self.batcher.aclose()


class AsyncClient:
    """Calls a running `flywheel serve` from asyncio code; see `Client` for what is retried and raised."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        *,
        retry: Retry | None = None,
        feedback_batch: int = 100,
        feedback_interval: float = 1.0,
        feedback_queue: int = 10_000,
    ) -> None:
        """Args: as `Client`."""
        self.http = httpx.AsyncClient(base_url=base_url, headers=auth_headers(api_key), timeout=timeout)
        self.retry = retry or Retry()
        batcher = AsyncFeedbackBatcher(self.post_feedback_batch, feedback_batch, feedback_interval, feedback_queue)
        self.feedback = AsyncFeedback(self, batcher)

    async def __aenter__(self) -> AsyncClient:
        """Use as `async with AsyncClient(...) as client:`; leaving flushes feedback and closes connections."""
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close (queued feedback is flushed first)."""
        await self.aclose()

    async def aclose(self) -> None:
        """Flush queued feedback, then close the connection pool."""
        await self.feedback.aclose()
        await self.http.aclose()

    async def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON (None for 204); as `Client.request`."""
        policy = retry_for(self.retry, method, retry)
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                error = exc
            wait = policy.wait(attempt, response, error)
            if wait is None:
                return outcome(self.http.base_url, response, error, attempt)
            await asyncio.sleep(wait)

    async def post_feedback_batch(self, events: Events) -> dict[str, int]:
        """POST one batch for the batcher (its events have ids already)."""
        return await self.request("POST", "/feedback", json={"events": events}, retry=True)

    async def upsert_documents(self, documents: list[dict[str, Any]]) -> int:
        """POST /documents (retried: an id posted again is replaced); returns the number upserted."""
        body = await self.request("POST", "/documents", json={"documents": documents}, retry=True)
        return int(body["upserted"])

    async def delete_document(self, doc_id: str) -> None:
        """DELETE /documents/{doc_id}; NotFound when there is no such document."""
        await self.request("DELETE", f"/documents/{quote(doc_id, safe='')}")

    async def search(
        self, query: str, k: int = 10, filter: dict[str, Any] | None = None, *, retry: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """POST /search; as `Client.search` (retried only with `retry=True`)."""
        return await self.request("POST", "/search", json=search_body(query, k, filter, extra), retry=retry)

    async def stats(self) -> dict[str, int]:
        """GET /stats."""
        return await self.request("GET", "/stats")

    async def health(self) -> dict[str, Any]:
        """GET /healthz."""
        return await self.request("GET", "/healthz")
