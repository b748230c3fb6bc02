"""Load generators over the public HTTP API: many concurrent feedback clients, and searchers that run while
the model is swapped. Used by tests/test_load.py (small numbers, in CI) and bench/load.py (full numbers)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np


@dataclass
class FeedbackLoad:
    """What a feedback storm sent and what the server said."""

    clients: int
    events_sent: int
    unique_events: int
    requests: int
    accepted: int = 0
    duplicates: int = 0
    status_counts: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (latency percentiles in ms, throughput in events/s)."""
        return {
            "clients": self.clients,
            "requests": self.requests,
            "events_sent": self.events_sent,
            "unique_events": self.unique_events,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "server_errors": sum(v for k, v in self.status_counts.items() if k >= 500) + len(self.errors),
            "wall_s": round(self.wall_s, 2),
            "events_per_s": round(self.events_sent / self.wall_s, 1) if self.wall_s else None,
            **percentiles_ms(self.latencies_s),
        }


def percentiles_ms(latencies_s: list[float]) -> dict[str, float | None]:
    """p50/p95/p99 of latencies, in milliseconds."""
    if not latencies_s:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return {"p50_ms": round(float(p50), 2), "p95_ms": round(float(p95), 2), "p99_ms": round(float(p99), 2)}


def feedback_storm(
    base_url: str,
    clients: int,
    events_per_client: int,
    duplicate_rate: float = 0.1,
    batch_size: int = 10,
    headers: dict[str, str] | None = None,
    seed: int = 0,
    query: str = "python",
) -> FeedbackLoad:
    """Each client searches, then sends its events in batches concurrently with the others; a share
    `duplicate_rate` of what it sends repeats an event id already sent (or about to be sent) by any client,
    as a retrying client would.

    Args:
        base_url: the server.
        clients: concurrent clients (one thread and one connection each).
        events_per_client: events each client sends, duplicates included.
        duplicate_rate: share of sent events that repeat an existing event id.
        batch_size: events per POST /feedback.
        headers: e.g. the search key.
        seed: for the choice of duplicates and the order.
        query: what each client searches for (its events refer to the hits shown).

    Returns:
        Counts, per-request latencies and status codes.
    """
    rng = random.Random(seed)
    with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
        searches = []
        for _ in range(clients):
            body = http.post("/search", json={"query": query, "k": 5}).raise_for_status().json()
            searches.append((body["search_id"], [h["doc_id"] for h in body["hits"]]))
    n_dup = round(events_per_client * duplicate_rate)
    originals = [
        [
            {
                "event_id": f"c{c}-e{i}",
                "search_id": sid,
                "doc_id": rng.choice(shown),
                "type": rng.choice(["click", "skip"]),
            }
            for i in range(events_per_client - n_dup)
        ]
        for c, (sid, shown) in enumerate(searches)
    ]
    pool = [e for events in originals for e in events]
    plans = []
    for events in originals:
        plan = events + [dict(rng.choice(pool)) for _ in range(n_dup)]
        rng.shuffle(plan)
        plans.append([plan[i : i + batch_size] for i in range(0, len(plan), batch_size)])
    load = FeedbackLoad(
        clients=clients,
        events_sent=sum(len(b) for plan in plans for b in plan),
        unique_events=len(pool),
        requests=sum(len(plan) for plan in plans),
    )
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(batches: list[list[dict[str, Any]]]) -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=120) as http:
            start.wait()
            for batch in batches:
                t0 = time.perf_counter()
                try:
                    response = http.post("/feedback", json={"events": batch})
                except httpx.HTTPError as exc:
                    with lock:
                        load.errors.append(repr(exc))
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    load.latencies_s.append(elapsed)
                    load.status_counts[response.status_code] = load.status_counts.get(response.status_code, 0) + 1
                    if response.status_code == 200:
                        body = response.json()
                        load.accepted += body["accepted"]
                        load.duplicates += body["duplicates"]
                    else:
                        load.errors.append(f"{response.status_code}: {response.text[:200]}")

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool_:
        list(pool_.map(client, plans))
    load.wall_s = time.perf_counter() - t0
    return load


@dataclass
class SearchLoad:
    """Answers collected by searchers: (model_version, [(doc_id, score)]) per answer, plus failures."""

    answers: list[tuple[str, list[tuple[str, float]]]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def search_storm(
    base_url: str,
    clients: int,
    query: str,
    k: int,
    during: Callable[[], Any],
    headers: dict[str, str] | None = None,
) -> tuple[SearchLoad, Any]:
    """Searchers hammer POST /search (the same query) while `during()` runs in the caller's thread.

    Args:
        base_url: the server.
        clients: concurrent searchers.
        query: the query every searcher sends (so answers are comparable per version).
        k: hits per search.
        during: what to do under load (e.g. swap models back and forth); its return value is passed back.
        headers: e.g. the search key.

    Returns:
        The answers and failures, and what `during()` returned.
    """
    load = SearchLoad()
    lock = threading.Lock()
    stop = threading.Event()
    ready = threading.Barrier(clients + 1)

    def searcher() -> None:
        with httpx.Client(base_url=base_url, headers=headers, timeout=60) as http:
            ready.wait()
            while not stop.is_set():
                t0 = time.perf_counter()
                try:
                    response = http.post("/search", json={"query": query, "k": k})
                except httpx.HTTPError as exc:
                    with lock:
                        load.failures.append(repr(exc))
                    continue
                elapsed = time.perf_counter() - t0
                with lock:
                    load.latencies_s.append(elapsed)
                    if response.status_code != 200:
                        load.failures.append(f"{response.status_code}: {response.text[:200]}")
                    else:
                        body = response.json()
                        hits = [(h["doc_id"], round(h["score"], 4)) for h in body["hits"]]
                        load.answers.append((body["model_version"], hits))

    threads = [threading.Thread(target=searcher, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    t0 = time.perf_counter()
    try:
        result = during()
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    load.wall_s = time.perf_counter() - t0
    return load, result


def mismatches(load: SearchLoad, expected: dict[str, list[tuple[str, float]]]) -> int:
    """Answers whose hits are not what their model version's encoder finds in its own collection."""
    return sum(1 for version, hits in load.answers if hits != expected.get(version))


__all__ = ["FeedbackLoad", "SearchLoad", "feedback_storm", "mismatches", "percentiles_ms", "search_storm"]
