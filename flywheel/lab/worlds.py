"""Worlds for the demo and the benches: a corpus, traffic queries users ask, and check queries no cycle ever sees.

A world's queries are split once, by query, into **traffic** (what simulated users ask; every cycle learns
from it) and **check** (held back for judging whether a promoted model is better on questions the loop never
saw). The split is deterministic and depends only on a query's text (`is_check_query`), so identical query
texts always land on the same side and a query keeps its side when others are added or removed:

    bucket = int(sha1("flywheel-check-v1:" + " ".join(text.lower().split())), 16) mod 100
    check if bucket < 30, else traffic

The shipped SciFact world was split this way once by `scripts/build_scifact_world.py` (its files say which
claim is which); Quora's demo set and a user's BEIR folder are split the same way when they are loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from flywheel.errors import InvalidInput
from flywheel.formats.beir import RetrievalSet, load_beir
from flywheel.types import Document
from flywheel.util.packaged import QUORA_DEMO, SCIFACT_WORLD

CHECK_PERCENT = 30
SPLIT_SALT = "flywheel-check-v1:"

_DESCRIPTIONS = {
    "scifact": (
        "SciFact: scientific claims as queries over 5,183 PubMed abstracts, expert judgements "
        "(CC BY-NC 2.0; a domain the packaged MiniLM was not tuned for)"
    ),
    "quora": (
        "Quora: duplicate questions as queries over 5,500 questions, Quora's labels "
        "(non-commercial; MiniLM was trained on Quora, so it starts near its ceiling)"
    ),
}
WORLDS = tuple(_DESCRIPTIONS)


@dataclass(frozen=True)
class World:
    """A corpus with two disjoint sets of judged queries: traffic (users ask them) and check (never seen by a cycle).

    Attributes:
        name: the world's name ("scifact", "quora", or the BEIR folder's name).
        description: one line on what it is and where it comes from.
        corpus: the documents to index.
        traffic_queries: query id -> text, for simulated users.
        traffic_relevant: query id -> ids of the documents judged relevant, for every traffic query.
        check_queries: query id -> text, held back from every cycle.
        check_relevant: query id -> relevant document ids, for every check query.
    """

    name: str
    description: str
    corpus: list[Document]
    traffic_queries: dict[str, str]
    traffic_relevant: dict[str, set[str]]
    check_queries: dict[str, str]
    check_relevant: dict[str, set[str]]

    def traffic(self) -> RetrievalSet:
        """The corpus with the traffic queries only (what the demo's users may ask)."""
        return _retrieval_set(self.corpus, self.traffic_queries, self.traffic_relevant)

    def check(self) -> RetrievalSet:
        """The corpus with the check queries only (for judging a model on questions no cycle saw)."""
        return _retrieval_set(self.corpus, self.check_queries, self.check_relevant)


def is_check_query(text: str) -> bool:
    """Whether a query belongs to the check side of the split (see the module docstring); depends on text only."""
    key = SPLIT_SALT + " ".join(text.lower().split())
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100 < CHECK_PERCENT


def split_queries(queries: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split query ids into (traffic, check) with `is_check_query`, each in the input's order.

    Args:
        queries: query id -> text.

    Returns:
        The traffic ids and the check ids.
    """
    check = [qid for qid, text in queries.items() if is_check_query(text)]
    chosen = set(check)
    return [qid for qid in queries if qid not in chosen], check


def load_world(name: str) -> World:
    """A shipped world by name.

    Args:
        name: "scifact" (split shipped in its files) or "quora" (the demo set, split when loaded).

    Returns:
        The world, loaded offline from the package's data.

    Raises:
        InvalidInput: an unknown name; the message lists the known ones.
    """
    if name == "scifact":
        traffic = load_beir(SCIFACT_WORLD, split="traffic")
        check = load_beir(SCIFACT_WORLD, split="check")
        return World(
            "scifact",
            _DESCRIPTIONS["scifact"],
            traffic.corpus,
            traffic.queries,
            _relevant(traffic, traffic.queries),
            check.queries,
            _relevant(check, check.queries),
        )
    if name == "quora":
        return _split_world("quora", _DESCRIPTIONS["quora"], load_beir(QUORA_DEMO))
    raise InvalidInput(f"unknown world {name!r}; choose one of: {', '.join(WORLDS)}")


def load_beir_world(folder: str | Path, split: str | None = None) -> World:
    """A user's BEIR folder as a world, its judged queries split into traffic and check by `split_queries`.

    Args:
        folder: corpus, queries and qrels in the BEIR layout (see `flywheel.formats.beir`).
        split: which qrels split to read when the folder has several.

    Returns:
        The world, named after the folder.

    Raises:
        DataFormatError: a file is missing or wrong.
        InvalidInput: every judged query falls on the check side, so users would have nothing to ask.
    """
    folder = Path(folder)
    return _split_world(folder.name, f"BEIR folder {folder}", load_beir(folder, split))


def _split_world(name: str, description: str, data: RetrievalSet) -> World:
    """Split a retrieval set's judged queries into traffic and check queries."""
    relevant = data.relevant
    traffic, check = split_queries({qid: text for qid, text in data.queries.items() if qid in relevant})
    if not traffic:
        raise InvalidInput(
            f"{description}: all {len(check)} judged queries fall on the check side; give it more queries"
        )
    return World(
        name,
        description,
        data.corpus,
        {qid: data.queries[qid] for qid in traffic},
        {qid: relevant[qid] for qid in traffic},
        {qid: data.queries[qid] for qid in check},
        {qid: relevant[qid] for qid in check},
    )


def _relevant(data: RetrievalSet, queries: dict[str, str]) -> dict[str, set[str]]:
    """Relevant ids of each query, empty set where a query has no positive judgement."""
    relevant = data.relevant
    return {qid: relevant.get(qid, set()) for qid in queries}


def _retrieval_set(corpus: list[Document], queries: dict[str, str], relevant: dict[str, set[str]]) -> RetrievalSet:
    qrels = {qid: dict.fromkeys(sorted(relevant[qid]), 1) for qid in queries}
    return RetrievalSet(corpus, dict(queries), qrels)
