"""Simulated chatbot users: search through the public HTTP API, look down the list, click, skip.

Only the public API is used (`POST /search`, `POST /feedback`), so this doubles as the reference client: a
chatbot integration does the same three things (search, show, report what the user did).

The user model is the cascade model with position bias: the user reads results top-down; a relevant
result at rank r is clicked with probability `click_prob * decay**(r-1)`; the results read before the click
are reported as `skip`. Noise: each non-relevant result read is clicked by mistake with probability
`wrong_click`, and with `no_click` a user leaves without clicking anything (no event is sent then).

Deterministic: the same seed and the same answers give the same clicks, and event ids are derived from the
search id, document and type (so a retried POST is deduplicated, as a real integration should arrange).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rich.progress import Progress

from flywheel.errors import InvalidInput


@dataclass(frozen=True)
class UserModel:
    """How simulated users behave; see the module docstring.

    Attributes:
        click_prob: probability of clicking a relevant result at rank 1.
        decay: position bias: the click probability is multiplied by this per rank further down.
        wrong_click: probability of clicking each non-relevant result read (noise).
        no_click: probability of leaving without any click (noise).
        k: results requested per search (how far a user can read).
    """

    click_prob: float = 0.95
    decay: float = 0.85
    wrong_click: float = 0.05
    no_click: float = 0.05
    k: int = 10

    def __post_init__(self) -> None:
        """Reject values that are not probabilities, so a typo cannot silently change the traffic."""
        for name in ("click_prob", "decay", "wrong_click", "no_click"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"UserModel.{name} must be between 0 and 1, got {value}")
        if self.k < 1:
            raise InvalidInput(f"UserModel.k must be at least 1, got {self.k}")

    def click_probability(self, rank: int) -> float:
        """Chance that a user who reads down to a relevant result at `rank` (1-based) clicks it."""
        return self.click_prob * self.decay ** (rank - 1)


@dataclass
class SimulationStats:
    """What a simulation sent and what the API answered."""

    searches: int = 0
    clicks: int = 0
    skips: int = 0
    wrong_clicks: int = 0
    abandoned: int = 0
    relevant_shown: int = 0
    accepted: int = 0
    duplicates: int = 0


def simulate(
    http: Any,
    queries: dict[str, str],
    relevant: dict[str, set[str]],
    user: UserModel | None = None,
    seed: int = 0,
    rounds: int = 1,
    progress: bool = False,
) -> SimulationStats:
    """Drive the API like chatbot users would.

    Args:
        http: an httpx.Client (or FastAPI TestClient) with the API's base URL and auth headers.
        queries: query id -> text.
        relevant: query id -> ids of the documents that answer it.
        user: behaviour parameters.
        seed: makes the whole run deterministic (same seed, same clicks).
        rounds: how many times each query is asked.
        progress: show a progress bar.

    Returns:
        Counts of what was sent and accepted.
    """
    user = user or UserModel()
    rng = random.Random(seed)
    stats = SimulationStats()
    order = [q for _ in range(rounds) for q in queries]
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("simulated users", total=len(order))
        for qid in order:
            body = _post(http, "/search", {"query": queries[qid], "k": user.k, "session_id": f"sim-{seed}"})
            stats.searches += 1
            events = _behave(body, relevant.get(qid, set()), user, rng, stats)
            if events:
                answer = _post(http, "/feedback", {"events": events})
                stats.accepted += answer["accepted"]
                stats.duplicates += answer["duplicates"]
            bar.advance(task)
    return stats


def _behave(
    body: dict[str, Any], relevant: set[str], user: UserModel, rng: random.Random, stats: SimulationStats
) -> list[dict[str, Any]]:
    """One user's reaction to one result list, as feedback events."""
    hits = body["hits"]
    if any(h["doc_id"] in relevant for h in hits):
        stats.relevant_shown += 1
    if rng.random() < user.no_click:
        stats.abandoned += 1
        return []
    clicked: int | None = None
    for i, hit in enumerate(hits):
        is_relevant = hit["doc_id"] in relevant
        if is_relevant and rng.random() < user.click_probability(i + 1):
            clicked = i
            break
        if not is_relevant and rng.random() < user.wrong_click:
            clicked = i
            stats.wrong_clicks += 1
            break
    if clicked is None:
        stats.abandoned += 1
        return []
    events = [_event(body["search_id"], h["doc_id"], "skip") for h in hits[:clicked]]
    events.append(_event(body["search_id"], hits[clicked]["doc_id"], "click"))
    stats.skips += clicked
    stats.clicks += 1
    return events


def _event(search_id: str, doc_id: str, kind: str) -> dict[str, Any]:
    """One feedback event; its id is stable for (search, document, type), so resending it is harmless."""
    event_id = hashlib.sha1(f"{search_id}\x1f{doc_id}\x1f{kind}".encode()).hexdigest()
    return {"event_id": event_id, "search_id": search_id, "doc_id": doc_id, "type": kind}


def _post(http: Any, path: str, payload: dict[str, Any]) -> dict[str, Any]:
    response = http.post(path, json=payload)
    if response.status_code >= 400:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def relevant_from_pairs(rows: Iterable[tuple[str, str]]) -> dict[str, set[str]]:
    """Group (query id, document id) judgements into query id -> relevant ids."""
    out: dict[str, set[str]] = {}
    for qid, doc_id in rows:
        out.setdefault(qid, set()).add(doc_id)
    return out
