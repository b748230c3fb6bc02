"""Team-draft interleaving (Radlinski, Kurup and Joachims, 2008): merge two rankings into one list users see,
remember which ranker ("team") put each result there, and credit each click to its team.

Team draft is fair: with two identical rankers each team's share of the list, and of the clicks, is a coin
flip, so a win share away from 0.5 can only come from the rankers differing where users look. `interleave`
adds one refinement: the results both rankings agree on from the top (their common prefix) belong to both
teams, and clicks on them earn neither team credit. Which team's coin placed them is noise, and on most
searches two good rankers agree on the top results, so crediting those clicks adds random wins and losses
that hide the real difference (on SciFact it cuts the searches a test needs 2x to 12x, `bench/online_test.py`).
Every function here is pure and deterministic given its seed, so a search's list can be rebuilt from its id.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar

T = TypeVar("T", bound=Hashable)

INCUMBENT = "incumbent"
CHALLENGER = "challenger"
SHARED = "both"  # in both rankings' common prefix: no team's credit
Team = Literal["incumbent", "challenger", "both"]
Outcome = Literal["win", "loss", "tie"]

# What each feedback event is worth to the team that showed the document (a skip is no evidence either way).
CREDIT = {"click": 1, "thumbs_up": 1, "thumbs_down": -1, "skip": 0}


def bucket(key: str) -> float:
    """A uniform number in [0, 1) from a string (a search id): the same key always lands in the same place."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def team_draft(incumbent: Sequence[T], challenger: Sequence[T], k: int, seed: str) -> list[tuple[T, Team]]:
    """Merge two rankings by team draft: the team with fewer picks (a coin toss on a tie) adds its best result
    not yet in the list; a result both rankers return appears once, for the team that picked it first.

    Args:
        incumbent: the incumbent's ranking, best first.
        challenger: the challenger's ranking, best first.
        k: the length of the merged list (fewer when the two rankings together hold fewer distinct results).
        seed: the coin's seed (the search id), so the list is reproducible.

    Returns:
        (result, team) pairs, best first.
    """
    rng = random.Random(seed)
    lists = {INCUMBENT: list(incumbent), CHALLENGER: list(challenger)}
    next_at = {INCUMBENT: 0, CHALLENGER: 0}
    picks = {INCUMBENT: 0, CHALLENGER: 0}
    merged: list[tuple[T, Team]] = []
    seen: set[T] = set()

    def advance(team: str) -> None:
        while next_at[team] < len(lists[team]) and lists[team][next_at[team]] in seen:
            next_at[team] += 1

    while len(merged) < k:
        advance(INCUMBENT)
        advance(CHALLENGER)
        left = [t for t in (INCUMBENT, CHALLENGER) if next_at[t] < len(lists[t])]
        if not left:
            break
        if len(left) == 1:
            team = left[0]
        elif picks[INCUMBENT] != picks[CHALLENGER]:
            team = INCUMBENT if picks[INCUMBENT] < picks[CHALLENGER] else CHALLENGER
        else:
            team = INCUMBENT if rng.random() < 0.5 else CHALLENGER
        item = lists[team][next_at[team]]
        merged.append((item, team))  # type: ignore[arg-type]
        seen.add(item)
        picks[team] += 1
    return merged


def common_prefix(first: Sequence[T], second: Sequence[T]) -> int:
    """How many results two rankings share from the top, in the same order."""
    n = 0
    for a, b in zip(first, second, strict=False):
        if a != b:
            break
        n += 1
    return n


def interleave(incumbent: Sequence[T], challenger: Sequence[T], k: int, seed: str) -> list[tuple[T, Team]]:
    """The list a user sees: `team_draft`, with the results of both rankings' common prefix marked SHARED.

    Team draft's first picks are exactly that prefix, in order (each team's next result is the same one), so
    only the teams change, never the list.
    """
    merged = team_draft(incumbent, challenger, k, seed)
    shared = common_prefix(incumbent, challenger)
    return [(doc, SHARED if i < shared else team) for i, (doc, team) in enumerate(merged)]


def credit(teams: dict[str, str], events: Iterable[tuple[str, str]]) -> Outcome | None:
    """The challenger's outcome on one interleaved list, from the feedback on it.

    Each document counts once per event type (a double click is one click); a click or thumbs-up is +1 for the
    team that showed the document, a thumbs-down -1.

    Args:
        teams: doc id -> the team that contributed it to the list (SHARED results earn no team credit).
        events: (doc id, event type) of the feedback on that list.

    Returns:
        "win" (the challenger's documents earned more), "loss", "tie" (feedback, but equal credit), or None when
        the list got no feedback that carries credit (no evidence: not counted).
    """
    score = {INCUMBENT: 0, CHALLENGER: 0}
    evidence = False
    for doc_id, kind in set(events):
        team, value = teams.get(doc_id), CREDIT.get(kind, 0)
        if team in score and value:
            score[team] += value
            evidence = True
    if not evidence:
        return None
    if score[CHALLENGER] == score[INCUMBENT]:
        return "tie"
    return "win" if score[CHALLENGER] > score[INCUMBENT] else "loss"


@dataclass(frozen=True)
class Tally:
    """Outcomes of an interleaving experiment so far: lists shown, and the challenger's wins, losses and ties."""

    searches: int = 0
    wins: int = 0
    losses: int = 0
    ties: int = 0

    @property
    def decisive(self) -> int:
        """Lists with a winner: the sample the stop rule reads."""
        return self.wins + self.losses

    @property
    def win_share(self) -> float | None:
        """The challenger's share of the decisive lists (0.5: no difference), None before the first."""
        return self.wins / self.decisive if self.decisive else None


def overlap(first: Sequence[T], second: Sequence[T], k: int) -> int:
    """How many of the first `k` results two rankings share (shadow mode's overlap@k)."""
    return len(set(first[:k]) & set(second[:k]))


__all__ = [
    "CHALLENGER",
    "CREDIT",
    "INCUMBENT",
    "SHARED",
    "Outcome",
    "Tally",
    "Team",
    "bucket",
    "common_prefix",
    "credit",
    "interleave",
    "overlap",
    "team_draft",
]
