"""Pair mining: positives, skip-above and explicit negatives, majority rule, cap, grouping, snapshot."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from flywheel.cycle.mining import mine_pairs, write_snapshot
from flywheel.serve.ledger import count_new_signals
from flywheel.serve.store import Store
from flywheel.types import Event, Impression


def _search(store: Store, sid: str, query: str, shown: str) -> None:
    store.log_search(sid, query, len(shown), "v1", [Impression(i + 1, d, 1.0) for i, d in enumerate(shown)])


def _labels(mined) -> dict[tuple[str, str], int]:
    return {(p.group, p.doc_id): p.label for p in mined.pairs}


def test_click_positive_skip_above_and_explicit_negatives(store: Store) -> None:
    _search(store, "s1", "q one", "abcde")
    store.add_events([Event("e1", "s1", "c", "click"), Event("e2", "s1", "e", "thumbs_down")])
    labels = _labels(mine_pairs(store))
    assert labels == {("q one", "c"): 1, ("q one", "a"): 0, ("q one", "b"): 0, ("q one", "e"): 0}


def test_no_click_means_only_explicit_signals(store: Store) -> None:
    _search(store, "s1", "q", "abcd")
    store.add_events([Event("e1", "s1", "b", "skip")])
    assert _labels(mine_pairs(store)) == {("q", "b"): 0}


def test_majority_rule_and_tie_dropped(store: Store) -> None:
    # Same query group (normalised), three searches: "a" is clicked twice and skipped once; "b" ties.
    _search(store, "s1", "Same query", "ab")
    _search(store, "s2", "same query!", "ba")
    _search(store, "s3", "SAME  query", "ab")
    store.add_events(
        [
            Event("1", "s1", "a", "click"),  # a +1
            Event("2", "s2", "a", "click"),  # a +1, b skip-above -1
            Event("3", "s3", "b", "click"),  # b +1, a skip-above -1
        ]
    )
    mined = mine_pairs(store)
    assert _labels(mined) == {("same query", "a"): 1}
    assert mined.counts["conflicts_dropped"] == 1
    pair = mined.pairs[0]
    assert (pair.positive_votes, pair.negative_votes, pair.searches) == (2, 1, 3)
    assert pair.query in ("Same query", "same query!", "SAME  query")


def test_cap_per_query_keeps_positives_first(store: Store) -> None:
    _search(store, "s1", "popular", "abcdefgh")
    store.add_events([Event("c", "s1", "h", "click")])
    mined = mine_pairs(store, max_pairs_per_query=3)
    assert len(mined.pairs) == 3 and mined.pairs[0].label == 1 and mined.pairs[0].doc_id == "h"
    assert mined.counts["capped"] == 5


def test_window_and_deleted_documents(store: Store) -> None:
    _search(store, "s1", "q", "ab")
    store.add_events([Event("e1", "s1", "b", "click")])
    with store.transaction() as con:
        store.delete_document(con, "a")
    mined = mine_pairs(store)
    assert _labels(mined) == {("q", "b"): 1}  # "a" no longer exists: not trained on
    earlier = mine_pairs(store, window_end=mined.window_end.replace(year=2000))
    assert earlier.pairs == []


def test_cosine_grouping_merges_near_identical_queries(store: Store, minilm_path: str) -> None:
    from flywheel.models.encoder import Encoder
    from flywheel.models.loading import load_model

    encoder = Encoder("v1", load_model(minilm_path, "cpu"))
    a, b, c = encoder.encode(["how do i reset my password", "how can i reset my password", "best pizza in town"])
    threshold = float(a @ b) - 0.02  # the two password queries are closer than this; pizza is far below
    assert float(a @ c) < threshold
    _search(store, "s1", "How do I reset my password?", "ab")
    _search(store, "s2", "How can I reset my password", "ab")
    _search(store, "s3", "Best pizza in town", "ab")
    store.add_events([Event("1", "s1", "a", "click"), Event("2", "s2", "a", "click"), Event("3", "s3", "b", "click")])
    mined = mine_pairs(store, group_threshold=threshold, encoder=encoder)
    assert mined.counts["queries"] == 2 and mined.counts["groups_merged"] == 1
    merged = [p for p in mined.pairs if p.doc_id == "a" and p.label == 1]
    assert len(merged) == 1 and merged[0].positive_votes == 2
    assert mine_pairs(store).counts["queries"] == 3  # without the threshold, text normalisation only


def test_snapshot_and_new_pair_count(store: Store, tmp_path: Path) -> None:
    _search(store, "s1", "q", "abc")
    store.add_events([Event("e1", "s1", "c", "click"), Event("e2", "s1", "c", "thumbs_up")])
    mined = mine_pairs(store)
    path = write_snapshot(mined, tmp_path / "cycle" / "pairs.parquet")
    table = pq.read_table(path)
    assert table.num_rows == 3 and set(table.column("label").to_pylist()) == {0, 1}
    assert table.schema.metadata[b"flywheel.window_end"].decode() == mined.window_end.isoformat()
    assert count_new_signals(store, None) == 1
    assert count_new_signals(store, mined.window_end) == 0


def test_the_filters_of_searches_are_kept_for_the_evaluation(store: Store) -> None:
    def search(sid: str, query: str, metadata_filter: dict | None) -> None:
        shown = [Impression(1, "a", 1.0), Impression(2, "b", 0.9)]
        store.log_search(sid, query, 2, "v1", shown, search_filter=metadata_filter)
        store.add_events([Event(f"e-{sid}", sid, "b", "click")])

    search("s1", "tenant question", {"tenant": "acme"})
    search("s2", "Tenant question?", {"tenant": "globex"})
    search("s3", "mixed question", {"tenant": "acme"})
    search("s4", "mixed question", None)  # one search saw everything: the group is not restricted
    search("s5", "latest question", {"lang": ["en", "de"]})
    mined = mine_pairs(store, next_traffic_percent=20)
    assert mined.filters == {"tenant question": [{"tenant": "acme"}, {"tenant": "globex"}]}
    assert [(s.search_id, s.filter) for s in mined.next_traffic] == [("s5", {"lang": ["en", "de"]})]
    assert mined.counts["filtered_searches"] == 3
