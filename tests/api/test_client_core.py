"""What both clients share: the backoff's growth, cap and jitter, what is retried, and event payloads."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from flywheel.api.client_core import NO_RETRY, Retry, event_payload, retry_for


def test_backoff_doubles_is_capped_and_jittered() -> None:
    policy = Retry(attempts=10, backoff=0.25, max_backoff=2.0, jitter=0.5)
    for attempt, full in [(1, 0.25), (2, 0.5), (3, 1.0), (4, 2.0), (8, 2.0)]:
        delays = {policy.delay(attempt) for _ in range(200)}
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(delays) > 100  # drawn, not fixed: clients that lost one server do not return in lockstep
    assert Retry(jitter=0).delay(2) == 0.5


def test_what_is_retried() -> None:
    policy = Retry(attempts=3, backoff=0)
    request = httpx.Request("POST", "http://x/feedback")
    answer = {code: httpx.Response(code, request=request) for code in (200, 422, 500, 503)}
    assert policy.wait(1, answer[503], None) == 0 and policy.wait(2, answer[500], None) == 0
    assert policy.wait(3, answer[503], None) is None  # the last attempt
    assert policy.wait(1, answer[422], None) is None and policy.wait(1, answer[200], None) is None
    assert policy.wait(1, None, httpx.ConnectError("refused")) == 0
    assert policy.wait(1, None, httpx.ReadTimeout("slow")) == 0
    assert policy.wait(1, None, httpx.UnsupportedProtocol("ftp://")) is None  # fails the same way every time
    assert retry_for(policy, "GET", None) is policy and retry_for(policy, "POST", None) is NO_RETRY
    assert retry_for(policy, "POST", True) is policy and retry_for(policy, "GET", False) is NO_RETRY
    with pytest.raises(ValueError, match="at least 1"):
        Retry(attempts=0)


def test_event_payload_adds_an_id_once_and_encodes_time() -> None:
    event = {"search_id": "s", "doc_id": "d", "type": "click", "ts": datetime(2026, 1, 2, tzinfo=UTC)}
    payload = event_payload(event)
    assert len(payload["event_id"]) == 32 and payload["ts"] == "2026-01-02T00:00:00+00:00"
    assert event_payload(payload) == payload  # a retry keeps the id it was given
    assert "event_id" not in event and event_payload({**event, "event_id": "mine"})["event_id"] == "mine"
