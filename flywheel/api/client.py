"""The Python client of the flywheel API (sync, httpx): what a chatbot calls, and the CLI when a server runs.

Its async twin is `flywheel.api.async_client.AsyncClient`; both build bodies, retry and map errors through
`flywheel.api.client_core`, so they behave the same.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from flywheel.api.batcher import BatcherStats, Events, FeedbackBatcher
from flywheel.api.client_core import Retry, auth_headers, feedback_body, outcome, retry_for, search_body
from flywheel.config import Settings


class Feedback:
    """`client.feedback(events)` posts now and returns the counts; `client.feedback.send(events)` queues them
    for the background batcher and returns at once (see flywheel.api.batcher for what it guarantees)."""

    def __init__(self, client: Client, batcher: FeedbackBatcher) -> None:
        """Args: client: the client that posts; batcher: its background queue."""
        self.client = client
        self.batcher = batcher

    def __call__(self, events: list[dict[str, Any]]) -> dict[str, int]:
        """POST /feedback now, retried on connection errors and 5xx (each event gets an id if it has none).

        Returns:
            {"accepted": N, "duplicates": M}.
        """
        return self.client.request("POST", "/feedback", json=feedback_body(events), retry=True)

    def send(self, events: dict[str, Any] | list[dict[str, Any]]) -> Events:
        """Queue one event or a list for the background batcher; never blocks, never raises for the server.

        Returns:
            The queued events, each with its `event_id` (events over the queue's bound are dropped, counted).
        """
        return self.batcher.send(events)

    def flush(self, timeout: float | None = None) -> bool:
        """Post what is queued and wait; True when it settled within `timeout` seconds."""
        return self.batcher.flush(timeout)

    @property
    def stats(self) -> BatcherStats:
        """Sent, rejected, failed, dropped and pending event counts of the batcher."""
        return self.batcher.stats

    def close(self, timeout: float | None = None) -> None:
        """Flush and stop the batcher's thread."""
        self.batcher.close(timeout)


class Client:
    """Calls a running `flywheel serve`; errors come back as flywheel's own exceptions.

    Connection errors and 5xx answers are retried with exponential backoff and jitter (`retry`) for calls that
    are safe to repeat: reads, document upserts (by id), deletes and feedback (event ids are idempotency
    keys). A search is retried only when asked (`search(..., retry=True)`): every try logs a search.
    """

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
        """Args:
        base_url: e.g. "http://127.0.0.1:8000".
        api_key: sent as a Bearer token when given.
        timeout: seconds per HTTP attempt.
        retry: attempts and backoff (default `Retry()`: 4 attempts, 0.25 s doubling to 4 s); `Retry(attempts=1)`
            turns retries off.
        feedback_batch, feedback_interval, feedback_queue: the batcher's batch size, longest wait (seconds)
            and queue bound (events).
        """
        self.http = httpx.Client(base_url=base_url, headers=auth_headers(api_key), timeout=timeout)
        self.retry = retry or Retry()
        batcher = FeedbackBatcher(self.post_feedback_batch, feedback_batch, feedback_interval, feedback_queue)
        self.feedback = Feedback(self, batcher)

    @classmethod
    def for_settings(cls, settings: Settings) -> Client:
        """A client for the server these settings describe, with the first admin (else search) key."""
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        key = (settings.admin_keys or settings.search_keys or [None])[0]
        return cls(f"http://{host}:{settings.port}", key)

    def __enter__(self) -> Client:
        """Use as `with Client(...) as client:`; leaving flushes queued feedback and closes connections."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close (queued feedback is flushed first)."""
        self.close()

    def close(self) -> None:
        """Flush queued feedback (bounded by the batcher's close timeout), then close the connection pool."""
        self.feedback.close()
        self.http.close()

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """Send a request and return the decoded JSON (None for 204).

        Args:
            method, path: e.g. "GET", "/stats".
            retry: True or False forces retrying on or off; None (default) retries only idempotent methods.
            kwargs: passed to httpx (json=, params=, ...).

        Raises:
            FlywheelError: a subclass matching the HTTP status, with the server's message; ServerUnavailable
                when no answer came or 5xx persisted through the retries.
        """
        policy = retry_for(self.retry, method, retry)
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                error = exc
            wait = policy.wait(attempt, response, error)
            if wait is None:
                return outcome(self.http.base_url, response, error, attempt)
            time.sleep(wait)

    def post_feedback_batch(self, events: Events) -> dict[str, int]:
        """POST one batch for the batcher (its events have ids already)."""
        return self.request("POST", "/feedback", json={"events": events}, retry=True)

    def upsert_documents(self, documents: list[dict[str, Any]]) -> int:
        """POST /documents (retried: an id posted again is replaced); returns the number upserted."""
        return int(self.request("POST", "/documents", json={"documents": documents}, retry=True)["upserted"])

    def delete_document(self, doc_id: str) -> None:
        """DELETE /documents/{doc_id}.

        Raises:
            NotFound: no such document.
        """
        self.request("DELETE", f"/documents/{quote(doc_id, safe='')}")

    def search(
        self, query: str, k: int = 10, filter: dict[str, Any] | None = None, *, retry: bool = False, **extra: Any
    ) -> dict[str, Any]:
        """POST /search; `filter` restricts it to documents whose metadata match (see docs/api.md).

        Args:
            query, k, filter: the search.
            retry: retry connection errors and 5xx (off by default: each try that reached the server is logged
                as a search of its own).
            extra: other body fields (user_id, session_id).

        Returns:
            {"search_id", "model_version", "hits": [{"doc_id", "text", "score", "rank", "metadata"}]}.
        """
        return self.request("POST", "/search", json=search_body(query, k, filter, extra), retry=retry)

    def stats(self) -> dict[str, int]:
        """GET /stats."""
        return self.request("GET", "/stats")

    def health(self) -> dict[str, Any]:
        """GET /healthz: status, serving model version, document count, encoder backend."""
        return self.request("GET", "/healthz")
