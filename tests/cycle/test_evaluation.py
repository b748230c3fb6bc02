"""The cycle's evaluation re-applies each held-out search's metadata filter: both models rank only what users
could have been shown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from flywheel.cycle.evaluation import filter_restrictions, next_traffic_view, unseen_view
from flywheel.cycle.mining import LoggedSearch, MinedPairs, Pair
from flywheel.scoring.ranking import retrieval_scores
from flywheel.serve.index import Index
from flywheel.types import Document
from flywheel.util.files import utcnow
from tests.helpers.encoders import TableEncoder, angle

# Two tenants' documents on a circle; the query of the incumbent points at globex's, the candidate's at acme's.
DOCS = {"globex-b": 0, "globex-c": 5, "acme-a": 20, "acme-d": 90}
TENANT = {"tenant": "acme"}


@pytest.fixture
def index(tmp_path: Path) -> Index:
    client = QdrantClient(path=str(tmp_path / "q"))
    index = Index(client, "documents")
    index.create("v1", 2)
    docs = [Document(d, d, {"tenant": d.split("-")[0]}) for d in DOCS]
    index.upsert("v1", docs, np.array([angle(DOCS[d]) for d in DOCS], np.float32))
    yield index
    client.close()


def _scorer() -> object:
    sides = {"incumbent": TableEncoder({"q": angle(0)}), "candidate": TableEncoder({"q": angle(20)})}
    corpus = dict.fromkeys(DOCS, "")
    vectors = np.array([angle(DOCS[d]) for d in DOCS], np.float32)

    def score(side: str, queries: dict, relevant: dict, candidates: dict | None = None) -> dict[str, np.ndarray]:
        return retrieval_scores(sides[side], queries, corpus, relevant, 10, vectors, candidates)

    return score


def _mined(filtered: bool) -> MinedPairs:
    """Two held-out searches and one held-out group, all asked under the acme tenant's filter, clicking acme-a."""
    searches = [
        LoggedSearch(f"s{i}", "q", "q", frozenset({"acme-a"}), {d: r for r, d in enumerate(DOCS, 1)}) for i in range(2)
    ]
    if filtered:
        searches = [LoggedSearch(s.search_id, s.group, s.query, s.clicked, s.ranks, TENANT) for s in searches]
    return MinedPairs([], None, utcnow(), next_traffic=searches, filters={"q": [TENANT]} if filtered else {})


def test_an_evaluation_with_filters_judges_only_what_the_filter_allowed(index: Index) -> None:
    heldout = [Pair("q", "q", "acme-a", "", 1, 1, 0, 2), Pair("q", "q", "globex-b", "", 0, 0, 1, 2)]
    views = {}
    for filtered in (False, True):
        mined = _mined(filtered)
        groups, searches = filter_restrictions(mined, lambda f: index.matching_ids("v1", f))
        views[filtered] = (
            next_traffic_view(_scorer(), mined.next_traffic, [], 0, searches),
            unseen_view(_scorer(), heldout, [], 0, None, groups),
        )
        assert (groups, searches) == (
            ({"q": {"acme-a", "acme-d"}}, {"s0": {"acme-a", "acme-d"}, "s1": {"acme-a", "acme-d"}})
            if filtered
            else ({}, {})
        )
    for plain, filtered in zip(views[False], views[True], strict=True):
        # Unfiltered, the incumbent puts two globex documents above the click (rank 3) and the candidate looks
        # better; under the filter users searched with, the incumbent ranked the click first too: no gain.
        assert plain["ndcg@10"]["incumbent"] == pytest.approx(0.5) and plain["ndcg@10"]["candidate"] == 1.0
        assert filtered["ndcg@10"]["incumbent"] == 1.0 and filtered["ndcg@10"]["delta"] == 0.0
        assert filtered["filtered_queries"] >= 1 and "filtered_queries" not in plain
        # The judged ranking keeps only shown documents the filter allows (metadata may have changed since).
        assert filtered["judged"]["ndcg@10"]["incumbent"] == 1.0 > plain["judged"]["ndcg@10"]["incumbent"]
