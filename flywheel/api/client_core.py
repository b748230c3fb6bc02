"""What the sync and async clients share: request bodies, the retry policy, and the status-to-error mapping.

Both clients run the same loop: send, then ask `Retry.wait` whether to try again and after how long, then
`outcome` turns the last response (or transport error) into decoded JSON or a flywheel exception. Only the
sending and the sleeping differ between them.
"""

from __future__ import annotations

import logging
import random
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from flywheel.errors import Conflict, FlywheelError, InvalidInput, NotFound, PayloadTooLarge, ServerUnavailable

log = logging.getLogger("flywheel.client")

# Transport failures worth another try: the server is restarting, a connection dropped, or it was slow.
# Anything else (a malformed URL, too many redirects) fails the same way every time.
RETRYABLE_ERRORS: tuple[type[Exception], ...] = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

# Methods that may be repeated without changing the result; a POST is retried only where its route says so.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

_ERRORS: dict[int, type[FlywheelError]] = {404: NotFound, 409: Conflict, 413: PayloadTooLarge, 422: InvalidInput}


@dataclass(frozen=True)
class Retry:
    """How a client retries connection errors and 5xx answers: bounded attempts, exponential backoff, jitter.

    The n-th wait is `min(max_backoff, backoff * 2**(n-1))`, of which a random part (`jitter`, 0..1) is drawn
    uniformly, so many clients that lost the same server do not come back in lockstep.
    """

    attempts: int = 4
    backoff: float = 0.25
    max_backoff: float = 4.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        """Refuse settings that would never send or never stop."""
        if self.attempts < 1:
            raise ValueError("Retry.attempts must be at least 1 (1 means no retries)")
        if self.backoff < 0 or self.max_backoff < 0 or not 0 <= self.jitter <= 1:
            raise ValueError("Retry.backoff and max_backoff must be >= 0, jitter in 0..1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        full = min(self.max_backoff, self.backoff * 2 ** (attempt - 1))
        return full * (1 - self.jitter) + random.uniform(0, full * self.jitter)

    def wait(self, attempt: int, response: httpx.Response | None, error: Exception | None) -> float | None:
        """Seconds to wait before trying again, or None when `attempt` was the last one.

        Args:
            attempt: the attempt just made (1-based).
            response: its response, when one came.
            error: its transport error, when none came.
        """
        failed = isinstance(error, RETRYABLE_ERRORS) or (response is not None and response.status_code >= 500)
        if not failed or attempt >= self.attempts:
            return None
        what = f"HTTP {response.status_code}" if response is not None else type(error).__name__
        seconds = self.delay(attempt)
        log.info("flywheel client: %s, attempt %d of %d; retrying in %.2f s", what, attempt, self.attempts, seconds)
        return seconds


NO_RETRY = Retry(attempts=1)


def retry_for(policy: Retry, method: str, retry: bool | None) -> Retry:
    """The policy one call runs under: `retry` True/False forces it; None retries idempotent methods only."""
    wanted = method.upper() in IDEMPOTENT_METHODS if retry is None else retry
    return policy if wanted else NO_RETRY


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The Authorization header for a key (none without one)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def outcome(base_url: Any, response: httpx.Response | None, error: Exception | None, attempts: int) -> Any:
    """The decoded JSON of a final response (None for 204), or the flywheel error it stands for.

    Raises:
        ServerUnavailable: no response came, or a 5xx was the last answer.
        NotFound, Conflict, PayloadTooLarge, InvalidInput: 404, 409, 413, 422, with the server's message.
        FlywheelError: any other 4xx (401 and 403 among them).
    """
    tries = f" after {attempts} attempts" if attempts > 1 else ""
    if response is None:
        raise ServerUnavailable(f"cannot reach the flywheel server at {base_url}{tries}: {error}") from error
    if response.status_code < 400:
        return None if response.status_code == 204 else response.json()
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    if response.status_code >= 500:
        raise ServerUnavailable(f"HTTP {response.status_code}{tries}: {detail}")
    raise _ERRORS.get(response.status_code, FlywheelError)(f"HTTP {response.status_code}: {detail}")


def search_body(query: str, k: int, filter: dict[str, Any] | None, extra: dict[str, Any]) -> dict[str, Any]:
    """The POST /search body; `filter` is left out when empty, so older servers keep working."""
    return {"query": query, "k": k, **({"filter": filter} if filter else {}), **extra}


def event_payload(event: dict[str, Any]) -> dict[str, Any]:
    """One feedback event as sent: a copy with an `event_id` (a new uuid when none was given) and `ts` in ISO.

    The id makes a retry safe: the server stores an event id once, however often it arrives.
    """
    out = dict(event)
    if not out.get("event_id"):
        out["event_id"] = uuid.uuid4().hex
    if isinstance(out.get("ts"), datetime):
        out["ts"] = out["ts"].isoformat()
    return out


def feedback_body(events: list[dict[str, Any]]) -> dict[str, Any]:
    """The POST /feedback body, every event with an id."""
    return {"events": [event_payload(e) for e in events]}
