"""An online test on the serving path: a challenger that ranks beside the incumbent until the test decides.

In an interleaving test a deterministic share of searches (by search id) shows one team-draft list of both
rankers' results; the rest are the incumbent's alone. In a shadow test the challenger ranks every search
silently and only the incumbent's list is shown. The `Service` holds at most one `Experiment` and reads it
under its serving lock, so a search sees either the test or no test, never half of one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import QueryAdapter
from flywheel.scoring.interleaving import CHALLENGER, INCUMBENT, SHARED, bucket, interleave, overlap
from flywheel.types import Hit, Impression
from flywheel.util.files import utcnow

MODES = ("interleave", "shadow")
ARMS = ("interleaved", "incumbent", "shadow")


@dataclass
class Experiment:
    """A challenger under test and how searches take part.

    Attributes:
        id: the cycle id whose candidate is tested (searches and the report carry it).
        mode: "interleave" or "shadow".
        version: the challenger's version (an adapter or a fine-tuned model).
        encoder: the challenger's query encoder; for an adapter challenger the incumbent's own base encoder.
        adapter: the challenger's query adapter, if it is one.
        fraction: the share of searches interleaved (shadow mode ranks all of them).
    """

    id: str
    mode: str
    version: str
    encoder: Encoder
    adapter: QueryAdapter | None
    fraction: float
    started_at: datetime = field(default_factory=utcnow)
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    stop_request: str | None = None  # "promote", "reject" or "shutdown" once someone asked the test to end

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown online test mode {self.mode!r}: use one of {', '.join(MODES)}")
        if not 0 <= self.fraction <= 1:
            raise ValueError(f"the interleaved fraction must be in [0, 1]; got {self.fraction}")

    @property
    def collection(self) -> str:
        """The version whose collection the challenger searches: its own (full) or its base's (adapter)."""
        return self.encoder.version

    def arm(self, search_id: str) -> str:
        """How a search takes part: "shadow", "interleaved" (inside the fraction) or "incumbent"."""
        if self.mode == "shadow":
            return "shadow"
        return "interleaved" if bucket(f"{self.id}:{search_id}") < self.fraction else "incumbent"

    def request_stop(self, why: str) -> None:
        """Ask the test to end ("promote", "reject", or "shutdown"); the cycle decides at its next look."""
        if self.stop_request is None:
            self.stop_request = why
        self._stop.set()

    def wait(self, seconds: float) -> str | None:
        """Sleep until the next look at the data, or until a stop request; returns the request, if any."""
        self._stop.wait(seconds)
        return self.stop_request


def merge(search_id: str, incumbent: list[Hit], challenger: list[Hit], k: int) -> tuple[list[Hit], list[Impression]]:
    """The interleaved list of one search: team draft of both rankers' hits, each document once, the results
    both rank alike from the top marked as both teams' (see `flywheel.scoring.interleaving.interleave`).

    Returns:
        (the hits to show, best first; their impressions with true ranks and teams).
    """
    by_id = {h.doc_id: h for h in challenger} | {h.doc_id: h for h in incumbent}  # the incumbent's score on a tie
    picked = interleave([h.doc_id for h in incumbent], [h.doc_id for h in challenger], k, seed=search_id)
    hits = [by_id[doc_id] for doc_id, _ in picked]
    impressions = [
        Impression(rank, doc_id, by_id[doc_id].score, team) for rank, (doc_id, team) in enumerate(picked, start=1)
    ]
    return hits, impressions


def shadow_record(shown: list[Hit], challenger: list[Hit], k: int) -> tuple[list[str], int]:
    """What a shadow search stores: the challenger's doc ids and their overlap@k with what was shown."""
    ids = [h.doc_id for h in challenger]
    return ids, overlap([h.doc_id for h in shown], ids, k)


__all__ = ["ARMS", "CHALLENGER", "INCUMBENT", "MODES", "SHARED", "Experiment", "merge", "shadow_record"]
