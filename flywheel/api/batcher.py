"""Background feedback batching: `send` queues and returns at once; a thread (sync) or a task (async) posts.

A chatbot must never wait on feedback, nor fail a user's request because the feedback server hiccuped. So
`send` only appends to a bounded in-memory queue (events past `max_queue` are dropped and counted), and a
worker posts batches of at most `max_batch` events when that many are waiting, when the oldest has waited
`interval` seconds, on `flush()` and on `close()`. Each post goes through the client's retries (event ids
make them safe). What still fails is logged and counted in `stats`, never raised to the caller:

- a batch the server refuses (`422` unknown search or unshown document, `409` reused id) is split in halves
  and re-sent, so one bad event costs only itself (`rejected`), not the good events batched with it;
- a batch that stays undeliverable through every retry (server down) is given up (`failed`).

What is lost if the process dies: the events still queued (at most `interval` seconds' worth in normal
running, up to `max_queue` while the server is down). A normal interpreter exit flushes the sync batcher
(an `atexit` hook, bounded by `close_timeout`); `kill -9`, a crash or a cancelled event loop do not.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flywheel.api.client_core import event_payload
from flywheel.errors import Conflict, FlywheelError, InvalidInput

log = logging.getLogger("flywheel.client")

Events = list[dict[str, Any]]


@dataclass
class BatcherStats:
    """Event counts since the batcher was made."""

    sent: int = 0  # acknowledged by the server (accepted, or already stored: a duplicate)
    rejected: int = 0  # refused by the server even on their own (4xx): they will never be stored
    failed: int = 0  # given up after every retry because the server stayed unreachable or kept answering 5xx
    dropped: int = 0  # never queued: the queue was full, or the batcher was closed
    pending: int = 0  # queued or being posted right now


class BatchQueue:
    """The bookkeeping both batchers share: the queue, when a batch is due, and what a post's outcome means."""

    def __init__(self, max_batch: int, interval: float, max_queue: int) -> None:
        """Args: max_batch: events per POST (keep it within the server's max_events_per_request);
        interval: seconds the oldest queued event may wait; max_queue: events held at most."""
        if max_batch < 1 or max_queue < 1 or interval <= 0:
            raise ValueError("max_batch and max_queue must be >= 1 and interval > 0")
        self.max_batch, self.interval, self.max_queue = max_batch, interval, max_queue
        self.waiting: deque[tuple[float, dict[str, Any]]] = deque()  # (queued at, event)
        self.stats = BatcherStats()
        self.queued = 0  # events ever accepted into the queue
        self.done = 0  # of those, events whose delivery is settled (sent, rejected or failed)

    def add(self, events: Events, closed: bool) -> Events:
        """Queue copies of `events` with ids; returns those queued (the rest are counted as dropped)."""
        now = time.monotonic()
        accepted = []
        for event in events:
            if closed or len(self.waiting) >= self.max_queue:
                self.stats.dropped += 1
                continue
            payload = event_payload(event)
            self.waiting.append((now, payload))
            accepted.append(payload)
        self.queued += len(accepted)
        if len(accepted) < len(events):
            why = "the batcher is closed" if closed else f"the queue is full ({self.max_queue} events)"
            log.warning("flywheel feedback: dropped %d events: %s", len(events) - len(accepted), why)
        self.stats.pending = self.queued - self.done
        return accepted

    def due(self, force: bool) -> bool:
        """Whether a batch should be posted now."""
        if not self.waiting:
            return False
        return force or len(self.waiting) >= self.max_batch or time.monotonic() - self.waiting[0][0] >= self.interval

    def until_due(self) -> float | None:
        """Seconds until the oldest event's interval runs out (None when nothing waits)."""
        return max(0.0, self.waiting[0][0] + self.interval - time.monotonic()) if self.waiting else None

    def take(self) -> Events:
        """The next batch, oldest first."""
        return [self.waiting.popleft()[1] for _ in range(min(self.max_batch, len(self.waiting)))]

    def record(self, batch: Events, error: Exception | None) -> list[Events]:
        """Count a post's outcome; returns the parts of a refused batch to post again on their own."""
        if error is None:
            self.stats.sent += len(batch)
            return []
        if isinstance(error, InvalidInput | Conflict) and len(batch) > 1:
            half = len(batch) // 2
            return [batch[:half], batch[half:]]
        if isinstance(error, InvalidInput | Conflict):
            self.stats.rejected += 1
            log.warning("flywheel feedback: event %s rejected: %s", batch[0].get("event_id"), error)
        else:
            self.stats.failed += len(batch)
            log.warning("flywheel feedback: %d events lost, the server stayed unavailable: %s", len(batch), error)
        return []

    def settled(self, batch: Events) -> None:
        """Mark a taken batch as settled."""
        self.done += len(batch)
        self.stats.pending = self.queued - self.done


# Batchers with a running thread: one exit hook flushes them all (a daemon thread dies with the interpreter).
_RUNNING: weakref.WeakSet[FeedbackBatcher] = weakref.WeakSet()


@atexit.register
def _close_at_exit() -> None:
    for batcher in list(_RUNNING):
        batcher.close()


class FeedbackBatcher:
    """Queues feedback and posts it from a daemon thread; `send` never blocks and never raises."""

    def __init__(
        self,
        post: Callable[[Events], Any],
        max_batch: int = 100,
        interval: float = 1.0,
        max_queue: int = 10_000,
        close_timeout: float = 10.0,
    ) -> None:
        """Args: post: sends one batch (the client's POST /feedback with retries); the rest: see BatchQueue;
        close_timeout: seconds `close()` (and the exit hook) waits for the queue to drain."""
        self.post = post
        self.queue = BatchQueue(max_batch, interval, max_queue)
        self.close_timeout = close_timeout
        self.cond = threading.Condition()
        self.flushing = 0  # callers waiting in flush(): post without waiting for size or interval
        self.closed = False
        self.thread: threading.Thread | None = None

    @property
    def stats(self) -> BatcherStats:
        """A copy of the counts."""
        with self.cond:
            return BatcherStats(**vars(self.queue.stats))

    def send(self, events: dict[str, Any] | Events) -> Events:
        """Queue one event or a list; returns the queued events with their ids (to log or correlate)."""
        with self.cond:
            accepted = self.queue.add([events] if isinstance(events, dict) else list(events), self.closed)
            if accepted and self.thread is None:
                self.thread = threading.Thread(target=self.run, name="flywheel-feedback", daemon=True)
                self.thread.start()
                _RUNNING.add(self)
            self.cond.notify_all()
        return accepted

    def flush(self, timeout: float | None = None) -> bool:
        """Post everything queued so far and wait until it is settled; True when it was within `timeout`."""
        with self.cond:
            target = self.queue.queued
            if self.queue.done >= target:
                return True
            self.flushing += 1
            self.cond.notify_all()
            try:
                return self.cond.wait_for(lambda: self.queue.done >= target, timeout)
            finally:
                self.flushing -= 1

    def close(self, timeout: float | None = None) -> None:
        """Flush (waiting at most `timeout`, default close_timeout), then stop the thread; later sends drop."""
        timeout = self.close_timeout if timeout is None else timeout
        if not self.flush(timeout):
            log.warning("flywheel feedback: %d events still unsent at close", self.stats.pending)
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        _RUNNING.discard(self)
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def run(self) -> None:
        """The worker: wait for a due batch, post it outside the lock (splitting refused parts), record it."""
        while True:
            with self.cond:
                while not self.queue.due(force=self.flushing > 0 or self.closed):
                    if self.closed:
                        return
                    self.cond.wait(self.queue.until_due())
                batch = self.queue.take()
            todo = [batch]
            while todo:
                part = todo.pop()
                error = _attempt(self.post, part)
                with self.cond:
                    todo.extend(self.queue.record(part, error))
            with self.cond:
                self.queue.settled(batch)
                self.cond.notify_all()


def _attempt(post: Callable[[Events], Any], part: Events) -> Exception | None:
    """One post; its error, or None. Never raises: feedback must not break the request path."""
    try:
        post(part)
    except FlywheelError as exc:
        return exc
    except Exception as exc:  # a bug or an unexpected library error: log it, keep the worker alive
        log.exception("flywheel feedback: unexpected error posting %d events", len(part))
        return exc
    return None


async def _attempt_async(post: Callable[[Events], Awaitable[Any]], part: Events) -> Exception | None:
    """One awaited post; its error, or None (the async twin of `_attempt`)."""
    try:
        await post(part)
    except FlywheelError as exc:
        return exc
    except Exception as exc:  # never let the task die: log and count instead
        log.exception("flywheel feedback: unexpected error posting %d events", len(part))
        return exc
    return None


class AsyncFeedbackBatcher:
    """The same queue, posted from an asyncio task; `send` must be called from the event loop's thread."""

    def __init__(
        self,
        post: Callable[[Events], Awaitable[Any]],
        max_batch: int = 100,
        interval: float = 1.0,
        max_queue: int = 10_000,
    ) -> None:
        """Args: post: sends one batch (the async client's POST /feedback with retries); the rest: see BatchQueue."""
        self.post = post
        self.queue = BatchQueue(max_batch, interval, max_queue)
        self.flushing = 0
        self.closed = False
        self.task: asyncio.Task[None] | None = None
        self.wake: asyncio.Event | None = None
        self.progress: asyncio.Event | None = None

    @property
    def stats(self) -> BatcherStats:
        """A copy of the counts."""
        return BatcherStats(**vars(self.queue.stats))

    def send(self, events: dict[str, Any] | Events) -> Events:
        """Queue one event or a list (no await: it returns at once); returns the queued events with their ids."""
        accepted = self.queue.add([events] if isinstance(events, dict) else list(events), self.closed)
        if accepted and self.task is None:
            self.wake, self.progress = asyncio.Event(), asyncio.Event()
            self.task = asyncio.get_running_loop().create_task(self.run(), name="flywheel-feedback")
        if self.wake is not None:
            self.wake.set()
        return accepted

    async def flush(self) -> None:
        """Post everything queued so far and wait until it is settled."""
        target = self.queue.queued
        if self.task is None or self.progress is None or self.wake is None:
            return
        self.flushing += 1
        try:
            while self.queue.done < target and not self.task.done():
                self.progress.clear()
                self.wake.set()
                await self.progress.wait()
        finally:
            self.flushing -= 1

    async def aclose(self) -> None:
        """Flush, then stop the task; later sends are dropped."""
        await self.flush()
        self.closed = True
        if self.task is not None and self.wake is not None:
            self.wake.set()
            await self.task

    async def run(self) -> None:
        """The worker task: wait for a due batch, post it, record the outcome."""
        assert self.wake is not None and self.progress is not None
        while True:
            if self.queue.due(force=self.flushing > 0 or self.closed):
                batch = self.queue.take()
                todo = [batch]
                while todo:
                    part = todo.pop()
                    todo.extend(self.queue.record(part, await _attempt_async(self.post, part)))
                self.queue.settled(batch)
                self.progress.set()
                continue
            if self.closed:
                return
            self.wake.clear()
            with contextlib.suppress(TimeoutError):  # the oldest event's interval ran out
                await asyncio.wait_for(self.wake.wait(), self.queue.until_due())
