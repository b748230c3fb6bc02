"""Exploration: on a share of searches, the bottom of the list shows results from just below it, at random.

Clicks can only fall on what was shown, so a loop that always shows its own top k learns only to reorder
what it already ranks high: a relevant document at rank 14 is never clicked, and no cycle lifts it. On the
exploring share of searches (`share`, chosen by a hash of the search id, so it is the same on a rerun) the
top `k - slots` results stay where they are and the last `slots` positions show a uniform random sample, in
random order, of the results ranked from `k - slots + 1` to `k + depth`. The cost falls where users read
least (with k = 10 and 3 slots, ranks 8 to 10), and the gain is clicks on documents the ranker put just
out of sight, plus the same documents shown at several ranks, which lets the click model separate position
from relevance. With `repeats`, only questions asked that many times before explore (`AskCounts` counts
them): what their users find is remembered for everyone who asks again. `bench/learners.py --explore`
measures both sides; docs/adapters.md ("Exploration") has the table, and why it is off by default.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from flywheel.errors import InvalidInput
from flywheel.scoring.interleaving import bucket
from flywheel.util.text import normalise_query

T = TypeVar("T")


@dataclass(frozen=True)
class Exploration:
    """How a share of searches explores below the top of the list.

    Attributes:
        share: the fraction of searches that explore (0 turns exploration off).
        slots: how many of the last positions show a random draw (at most k - 1 of them; k = 1 never explores).
        depth: how far below k the draw reaches: candidates are the results ranked k - slots + 1 .. k + depth.
        repeats: only a question asked at least this many times before may explore (0: any search). What a
            repeat's users find is remembered for every later asker (the query memory), so exploring there
            pays back; a question asked once gains nothing from it.
    """

    share: float = 0.0
    slots: int = 3
    depth: int = 20
    repeats: int = 0

    def __post_init__(self) -> None:
        """Reject settings that cannot describe exploration (InvalidInput names the field)."""
        if not 0.0 <= self.share <= 1.0:
            raise InvalidInput(f"exploration share must be between 0 and 1, got {self.share}")
        if self.slots < 1:
            raise InvalidInput(f"exploration slots must be at least 1, got {self.slots}")
        if self.depth < 1:
            raise InvalidInput(f"exploration depth must be at least 1, got {self.depth}")
        if self.repeats < 0:
            raise InvalidInput(f"exploration repeats must be at least 0, got {self.repeats}")

    def explores(self, search_id: str, k: int, asked_before: int = 0) -> bool:
        """Whether this search explores: inside the share (by its id's hash), with room to keep a top, and its
        question asked at least `repeats` times before (`asked_before`, as `AskCounts.see` returns it)."""
        if self.share <= 0 or k <= 1 or asked_before < self.repeats:
            return False
        return bucket(f"explore:{search_id}") < self.share

    def fetch(self, k: int) -> int:
        """How many results to ask the engine for when a search explores."""
        return k + self.depth

    def arrange(self, ranked: Sequence[T], k: int, search_id: str) -> list[T]:
        """The k results an exploring search shows, from the engine's `ranked` list (best first, up to `fetch(k)`).

        The top `k - slots` stay in order; each of the remaining positions shows one of the results ranked below
        them, drawn uniformly without replacement and seeded by the search id (a rerun shows the same list).
        With fewer candidates than positions, the list is as long as there are results.
        """
        keep = max(1, k - self.slots)
        head, pool = list(ranked[:keep]), list(ranked[keep : k + self.depth])
        room = min(k - keep, len(pool))
        return head + random.Random(f"explore:{search_id}").sample(pool, room)


class AskCounts:
    """How many times each question was asked (by its normalised text), bounded and safe across threads.

    Holds at most `max_questions` questions: when full, the less asked half is forgotten (questions asked once
    go first: one that never came back is the least likely to be asked again).
    """

    def __init__(self, asked: Iterable[tuple[str, int]] = (), max_questions: int = 100_000) -> None:
        """Args: asked: (query text, times asked) to start from, e.g. the search log's; max_questions: the bound."""
        if max_questions < 1:
            raise InvalidInput(f"max_questions must be at least 1, got {max_questions}")
        self._counts: Counter[str] = Counter()
        self._max = max_questions
        self._lock = threading.Lock()
        for text, times in asked:
            self._counts[normalise_query(text)] += int(times)
        self._prune()

    def see(self, query: str) -> int:
        """Count one more ask of `query`; returns how many times it was asked before this one."""
        key = normalise_query(query)
        with self._lock:
            before = self._counts[key]
            self._counts[key] = before + 1
            self._prune()
        return before

    def __len__(self) -> int:
        return len(self._counts)

    def _prune(self) -> None:
        if len(self._counts) > self._max:  # keep the most asked half: one pass per max / 2 new questions
            self._counts = Counter(dict(self._counts.most_common(max(1, self._max // 2))))


__all__ = ["AskCounts", "Exploration"]
