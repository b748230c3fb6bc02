"""Simulated chatbot users: search through the public HTTP API, look down the list, click, skip, rate.

Only the public API is used (`POST /search`, `POST /feedback`), so this doubles as the reference client: a
chatbot integration does the same three things (search, show, report what the user did).

**Which query is asked when** (`Traffic.popularity`):
- `uniform`: the queries in their given order, round after round (`rounds` passes): every query equally often.
- `zipf`: `searches` draws with replacement; the query at popularity rank i (1-based) is asked with
  probability proportional to 1 / i**zipf_exponent, so head questions come back many times and tail ones
  rarely or never. The popularity order is a seeded shuffle of the query ids (the head is not the file's
  first query). With exponent 1 over 500 queries, the head query is about 15% of the traffic.

**How a user reads one result list** (`UserModel.examination`):
- `cascade`: the user reads top-down; a relevant result at rank r is clicked with probability
  `click_prob * decay**(r-1)`, a non-relevant one read is clicked by mistake with `wrong_click`, and the user
  stops at the first click. At most one click per list.
- `pbm`, the position-based model: each rank r is examined independently, with the propensity curve

      P(examine rank r) = (1 / r) ** eta        (eta = UserModel.eta; 1.0: rank 2 is seen half as often as rank 1)

  and an examined result is clicked with `click_prob` if relevant, with `wrong_click` if not (a misclick). A
  relevant result at rank r is thus clicked with probability `click_prob * (1/r)**eta`; a list can get
  several clicks.

In both, `skip` is sent for each result the user examined and did not click that is ranked above a clicked
one (what a UI that logs "seen and passed over" reports; in the cascade that is every result above the
click). Noise and ratings, both models: with probability `no_click` the user leaves at once (abandonment, no
event); a click on a relevant result is followed by `thumbs_up` with probability `thumbs_up`; each examined
non-relevant result (misclicked or not) gets `thumbs_down` with probability `thumbs_down`.

Time order: each search is sent, then its events, before the next search (what a real client does), so the
search log's timestamps give the traffic's order. Deterministic: the same seed and the same answers give the
same events, and event ids are derived from the search id, document and type (so a retried POST is
deduplicated, as a real integration should arrange).
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from rich.progress import Progress

from flywheel.errors import InvalidInput

Examination = Literal["cascade", "pbm"]
Popularity = Literal["uniform", "zipf"]


@dataclass(frozen=True)
class UserModel:
    """How simulated users read one result list; see the module docstring.

    Attributes:
        click_prob: cascade: chance of clicking a relevant result at rank 1; pbm: of clicking an examined one.
        decay: cascade's position bias: the click probability is multiplied by this per rank further down.
        wrong_click: chance of clicking a non-relevant result read or examined (misclick noise).
        no_click: chance of leaving without looking at the list (abandonment).
        k: results requested per search (how far a user can read).
        examination: "cascade" (read top-down, stop at the first click) or "pbm" (position-based model).
        eta: pbm's propensity exponent: P(examine rank r) = (1/r)**eta; 0 examines every rank.
        thumbs_up: chance that a click on a relevant result is followed by a thumbs_up.
        thumbs_down: chance that an examined non-relevant result gets a thumbs_down.
    """

    click_prob: float = 0.95
    decay: float = 0.85
    wrong_click: float = 0.05
    no_click: float = 0.05
    k: int = 10
    examination: Examination = "cascade"
    eta: float = 1.0
    thumbs_up: float = 0.0
    thumbs_down: float = 0.0

    def __post_init__(self) -> None:
        """Reject values that are not probabilities, so a typo cannot silently change the traffic."""
        for name in ("click_prob", "decay", "wrong_click", "no_click", "thumbs_up", "thumbs_down"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"UserModel.{name} must be between 0 and 1, got {value}")
        if self.k < 1:
            raise InvalidInput(f"UserModel.k must be at least 1, got {self.k}")
        if self.examination not in ("cascade", "pbm"):
            raise InvalidInput(f"UserModel.examination must be 'cascade' or 'pbm', got {self.examination!r}")
        if not (math.isfinite(self.eta) and self.eta >= 0):
            raise InvalidInput(f"UserModel.eta must be a finite number >= 0, got {self.eta}")

    def examine_probability(self, rank: int) -> float:
        """pbm's propensity curve: chance that the result at `rank` (1-based) is examined, (1/rank)**eta."""
        return (1.0 / rank) ** self.eta

    def click_probability(self, rank: int) -> float:
        """Chance that a relevant result at `rank` (1-based) is clicked (cascade: given the user read down to it)."""
        if self.examination == "pbm":
            return self.click_prob * self.examine_probability(rank)
        return self.click_prob * self.decay ** (rank - 1)


@dataclass(frozen=True)
class Traffic:
    """Which queries are asked, how often and in what order, and how the users behave.

    Attributes:
        popularity: "uniform" (every query once per round) or "zipf" (popularity-weighted draws with repeats).
        zipf_exponent: zipf's exponent s: the i-th most popular query is asked with weight 1 / i**s.
        searches: total searches (default: `rounds` x the number of queries); uniform mode cycles the queries.
        rounds: passes over the queries when `searches` is not set.
        user: how each user reads a result list.
    """

    popularity: Popularity = "uniform"
    zipf_exponent: float = 1.0
    searches: int | None = None
    rounds: int = 1
    user: UserModel = field(default_factory=UserModel)

    def __post_init__(self) -> None:
        """Reject values that cannot describe traffic (InvalidInput names the field)."""
        if self.popularity not in ("uniform", "zipf"):
            raise InvalidInput(f"Traffic.popularity must be 'uniform' or 'zipf', got {self.popularity!r}")
        if not (math.isfinite(self.zipf_exponent) and self.zipf_exponent > 0):
            raise InvalidInput(f"Traffic.zipf_exponent must be a finite number > 0, got {self.zipf_exponent}")
        if self.searches is not None and self.searches < 1:
            raise InvalidInput(f"Traffic.searches must be at least 1, got {self.searches}")
        if self.rounds < 1:
            raise InvalidInput(f"Traffic.rounds must be at least 1, got {self.rounds}")


@dataclass
class SimulationStats:
    """What a simulation sent and what the API answered."""

    searches: int = 0
    distinct_queries: int = 0
    clicks: int = 0  # misclicks included
    skips: int = 0
    wrong_clicks: int = 0  # clicks on non-relevant results
    thumbs_up: int = 0
    thumbs_down: int = 0
    abandoned: int = 0  # searches without a click (left at once, or nothing clicked)
    relevant_shown: int = 0  # searches whose list held a relevant result
    accepted: int = 0
    duplicates: int = 0


def popularity_order(query_ids: Iterable[str], seed: int) -> list[str]:
    """The queries from most to least popular: a seeded shuffle, the same for the same ids and seed."""
    ordered = list(query_ids)
    random.Random(f"flywheel-popularity:{seed}").shuffle(ordered)
    return ordered


def query_sequence(query_ids: Iterable[str], traffic: Traffic, seed: int = 0) -> list[str]:
    """The query ids in the order they are asked.

    Args:
        query_ids: the queries users may ask, in their given order.
        traffic: popularity mode, size and rounds.
        seed: makes the draws deterministic.

    Returns:
        One query id per search: uniform cycles through the queries in order; zipf draws with replacement.
    """
    ids = list(query_ids)
    if not ids:
        return []
    total = traffic.searches or traffic.rounds * len(ids)
    if traffic.popularity == "uniform":
        return [ids[i % len(ids)] for i in range(total)]
    order = popularity_order(ids, seed)
    weights = [1.0 / (rank**traffic.zipf_exponent) for rank in range(1, len(order) + 1)]
    return random.Random(f"flywheel-traffic:{seed}").choices(order, weights=weights, k=total)


def simulate(
    http: Any,
    queries: dict[str, str],
    relevant: dict[str, set[str]],
    user: UserModel | None = None,
    seed: int = 0,
    rounds: int = 1,
    progress: bool = False,
) -> SimulationStats:
    """Uniform traffic: each query asked `rounds` times in order (see `simulate_traffic` for the other modes).

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
    return simulate_traffic(http, queries, relevant, Traffic(rounds=rounds, user=user or UserModel()), seed, progress)


def simulate_traffic(
    http: Any,
    queries: dict[str, str],
    relevant: dict[str, set[str]],
    traffic: Traffic | None = None,
    seed: int = 0,
    progress: bool = False,
) -> SimulationStats:
    """Drive the API like chatbot users would: one search, then its events, then the next search.

    Args:
        http: an httpx.Client (or FastAPI TestClient) with the API's base URL and auth headers.
        queries: query id -> text (the queries users may ask).
        relevant: query id -> ids of the documents that answer it.
        traffic: popularity, size and user behaviour (default: uniform, one round, the default user).
        seed: makes the whole run deterministic (same seed, same queries in the same order, same events).
        progress: show a progress bar.

    Returns:
        Counts of what was sent and accepted.
    """
    traffic = traffic or Traffic()
    user = traffic.user
    rng = random.Random(seed)
    stats = SimulationStats()
    order = query_sequence(queries, traffic, seed)
    stats.distinct_queries = len(set(order))
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
    """One user's reaction to one result list, as feedback events in the order the user made them."""
    hits = [h["doc_id"] for h in body["hits"]]
    is_relevant = [doc in relevant for doc in hits]
    if any(is_relevant):
        stats.relevant_shown += 1
    if rng.random() < user.no_click:
        stats.abandoned += 1
        return []
    read = _EXAMINE[user.examination]
    examined, clicked = read(is_relevant, user, rng)
    if not clicked:
        stats.abandoned += 1
    lowest_click = max(clicked, default=-1)
    events: list[dict[str, Any]] = []

    def send(rank: int, kind: str) -> None:
        events.append(_event(body["search_id"], hits[rank], kind))

    for rank in examined:
        if rank in clicked:
            send(rank, "click")
            stats.clicks += 1
            if not is_relevant[rank]:
                stats.wrong_clicks += 1
            # Draw only when thumbs are on: the click stream of a seed stays what it was without them.
            if is_relevant[rank] and user.thumbs_up and rng.random() < user.thumbs_up:
                send(rank, "thumbs_up")
                stats.thumbs_up += 1
        elif rank < lowest_click:
            send(rank, "skip")
            stats.skips += 1
        if not is_relevant[rank] and user.thumbs_down and rng.random() < user.thumbs_down:
            send(rank, "thumbs_down")
            stats.thumbs_down += 1
    return events


def _cascade(is_relevant: list[bool], user: UserModel, rng: random.Random) -> tuple[list[int], set[int]]:
    """Read top-down and stop at the first click: (ranks read, {the clicked rank}), 0-based."""
    for rank, relevant in enumerate(is_relevant):
        chance = user.click_probability(rank + 1) if relevant else user.wrong_click
        if rng.random() < chance:
            return list(range(rank + 1)), {rank}
    return list(range(len(is_relevant))), set()


def _pbm(is_relevant: list[bool], user: UserModel, rng: random.Random) -> tuple[list[int], set[int]]:
    """Examine each rank with (1/r)**eta, click what is examined: (ranks examined, ranks clicked), 0-based."""
    examined: list[int] = []
    clicked: set[int] = set()
    for rank, relevant in enumerate(is_relevant):
        if rng.random() < user.examine_probability(rank + 1):
            examined.append(rank)
            if rng.random() < (user.click_prob if relevant else user.wrong_click):
                clicked.add(rank)
    return examined, clicked


_EXAMINE: dict[str, Callable[[list[bool], UserModel, random.Random], tuple[list[int], set[int]]]] = {
    "cascade": _cascade,
    "pbm": _pbm,
}


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
