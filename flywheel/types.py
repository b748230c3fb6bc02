"""Plain data passed between the parts of flywheel: documents, events, hits, labelled pairs, gate checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Document:
    """One document of the corpus; `id` is chosen by the user."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Event:
    """One feedback event sent by the chatbot."""

    event_id: str
    search_id: str
    doc_id: str
    type: str
    ts: datetime | None = None


@dataclass(frozen=True)
class Impression:
    """One hit shown to the user for a search."""

    rank: int
    doc_id: str
    score: float
    team: str | None = None  # in an interleaved list: the ranker that contributed it ("incumbent", "challenger")


@dataclass(frozen=True)
class Hit:
    """One search result."""

    doc_id: str
    text: str
    score: float
    metadata: dict[str, Any]


@dataclass(frozen=True)
class LabelledPair:
    """A (query, document) pair with a binary relevance label (1 = duplicate / clicked, 0 = not / skipped)."""

    query: str
    document: str
    label: int


@dataclass(frozen=True)
class TrainingExample:
    """A query, one relevant text and the hard negatives (e.g. skipped results) known for that query."""

    query: str
    positive: str
    negatives: tuple[str, ...] = ()


@dataclass(frozen=True)
class Check:
    """One condition of the gate and what was measured."""

    name: str
    passed: bool
    detail: str
