"""Exploration: on a share of searches, the bottom of the list shows results from just below it, at random.

Clicks can only fall on what was shown, so a loop that always shows its own top k learns only to reorder
what it already ranks high: a relevant document at rank 14 is never clicked, and no cycle lifts it. On the
exploring share of searches (`share`, chosen by a hash of the search id, so it is the same on a rerun) the
top `k - slots` results stay where they are and the last `slots` positions show a uniform random sample, in
random order, of the results ranked from `k - slots + 1` to `k + depth`. The cost falls where users read
least (with k = 10 and 3 slots, ranks 8 to 10), and the gain is clicks on documents the ranker put just
out of sight, plus the same documents shown at several ranks, which lets the click model separate position
from relevance. `bench/learners.py --explore` measures both sides; docs/adapters.md ("Exploration") has the
table, and why it is off by default.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from flywheel.errors import InvalidInput
from flywheel.scoring.interleaving import bucket

T = TypeVar("T")


@dataclass(frozen=True)
class Exploration:
    """How a share of searches explores below the top of the list.

    Attributes:
        share: the fraction of searches that explore (0 turns exploration off).
        slots: how many of the last positions show a random draw (at most k - 1 of them; k = 1 never explores).
        depth: how far below k the draw reaches: candidates are the results ranked k - slots + 1 .. k + depth.
    """

    share: float = 0.0
    slots: int = 3
    depth: int = 20

    def __post_init__(self) -> None:
        """Reject settings that cannot describe exploration (InvalidInput names the field)."""
        if not 0.0 <= self.share <= 1.0:
            raise InvalidInput(f"exploration share must be between 0 and 1, got {self.share}")
        if self.slots < 1:
            raise InvalidInput(f"exploration slots must be at least 1, got {self.slots}")
        if self.depth < 1:
            raise InvalidInput(f"exploration depth must be at least 1, got {self.depth}")

    def explores(self, search_id: str, k: int) -> bool:
        """Whether this search explores: inside the share (by its id's hash) and with room to keep a top."""
        return self.share > 0 and k > 1 and bucket(f"explore:{search_id}") < self.share

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


__all__ = ["Exploration"]
