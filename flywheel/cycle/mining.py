"""Pair mining: turn logged searches, impressions and feedback into labelled (query, document) pairs.

Signals, per search:
- positive: the document was clicked or got a thumbs_up;
- negative: an explicit skip or thumbs_down, and every document shown ABOVE the lowest clicked one that was
  not clicked itself (skip-above, Joachims 2002: the user read past it to click something lower).

Clean-up:
- queries are grouped by normalised text (Unicode NFKC, case-folded, punctuation and spacing collapsed) and,
  optionally, by cosine similarity above a threshold; a group is the unit of counting and of the split;
- one row per (query group, document) with its vote counts;
- conflicting labels are resolved by majority: positive votes (clicks, thumbs_up) against negative votes
  (skips, thumbs_down, skip-above); a tie is dropped as ambiguous and counted;
- at most `max_pairs_per_query` rows per group (positives first, then the most-voted negatives).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from flywheel.serve.ledger import count_events, labelled_rows, search_filters, shown_results
from flywheel.serve.store import Store
from flywheel.util.files import utcnow
from flywheel.util.text import normalise_query

log = logging.getLogger(__name__)


@dataclass
class Pair:
    """One (query group, document) row after clean-up."""

    group: str
    query: str
    doc_id: str
    doc_text: str
    label: int  # 1 positive, 0 negative
    positive_votes: int
    negative_votes: int
    searches: int
    source: str = "feedback"  # or "mined"
    click_rank: float = 0.0  # mean rank (1-based) it was shown at when clicked; 0 when never clicked


@dataclass(frozen=True)
class LoggedSearch:
    """One search of the latest traffic, as it came: what was asked, what was clicked, where it was shown."""

    search_id: str
    group: str
    query: str
    clicked: frozenset[str]
    ranks: dict[str, int] = field(default_factory=dict, hash=False, compare=False)  # doc id -> shown rank
    filter: dict[str, Any] | None = field(default=None, hash=False, compare=False)  # the search's metadata filter


@dataclass
class MinedPairs:
    """The pairs of one mining run and what they cover; `next_traffic` is the latest window, held out as it came."""

    pairs: list[Pair]
    window_start: datetime | None
    window_end: datetime
    counts: dict[str, int] = field(default_factory=dict)
    next_traffic: list[LoggedSearch] = field(default_factory=list)
    next_traffic_start: datetime | None = None
    shown: dict[str, set[str]] = field(default_factory=dict)  # group -> every document its searches showed
    # group -> the distinct metadata filters of its searches, for groups whose every search was filtered (one
    # unfiltered search could see the whole corpus, so such a group is not restricted)
    filters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def to_table(self) -> pa.Table:
        """The pairs as an Arrow table (the Parquet snapshot's content)."""
        columns = list(Pair.__dataclass_fields__)
        return pa.table({c: [getattr(p, c) for p in self.pairs] for c in columns})


def corpus_texts(store: Store) -> dict[str, str]:
    """Every stored document's text by id (what mining labels and hard-negative mining searches)."""
    return {d.id: d.text for batch in store.iter_documents(batch_size=4096) for d in batch}


def mine_pairs(
    store: Store,
    window_end: datetime | None = None,
    window_days: float | None = None,
    max_pairs_per_query: int = 20,
    group_threshold: float | None = None,
    encoder: Any = None,
    next_traffic_percent: int = 0,
) -> MinedPairs:
    """Mine labelled pairs from the event log.

    Args:
        store: the event store.
        window_end: only events received up to this time (default now); recorded for the next cycle.
        window_days: only searches this recent (default: everything logged).
        max_pairs_per_query: cap of rows per query group.
        group_threshold: merge query groups whose cosine (by `encoder`) exceeds this.
        encoder: a flywheel Encoder, needed only with `group_threshold`.
        next_traffic_percent: this share of the latest searches with feedback is not mined into pairs but
            kept as `next_traffic`, one entry per search (repeats included): the time-split view of the gate.

    Returns:
        The pairs with their window and counts (events, searches, positives, negatives, conflicts, ...).
    """
    end = window_end or utcnow()
    start = end - timedelta(days=window_days) if window_days else None
    texts = corpus_texts(store)
    rows, latest, cut = _split_latest(labelled_rows(store, end, start), next_traffic_percent)

    groups: dict[str, Counter[str]] = defaultdict(Counter)  # group -> raw query texts
    votes: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # pos, neg, searches, rank sum
    searches = set()
    for search_id, query, doc_id, positive, negative, _ts, rank in rows:
        key = normalise_query(query)
        if not key or doc_id not in texts:  # a deleted document can no longer be trained on
            continue
        searches.add(search_id)
        groups[key][query] += 1
        vote = votes[(key, doc_id)]
        vote[0] += positive
        vote[1] += negative
        vote[2] += 1
        vote[3] += rank * positive

    merged = _merge_similar(list(groups), encoder, group_threshold) if group_threshold else {}
    by_group: dict[str, list[Pair]] = defaultdict(list)
    conflicts = 0
    combined: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (key, doc_id), vote in votes.items():
        target = combined[(merged.get(key, key), doc_id)]
        for i, value in enumerate(vote):
            target[i] += value
    queries: dict[str, Counter[str]] = defaultdict(Counter)
    for key, texts_seen in groups.items():
        queries[merged.get(key, key)].update(texts_seen)
    for (group, doc_id), (pos, neg, n, rank_sum) in combined.items():
        if pos == neg:
            conflicts += 1
            continue
        query = queries[group].most_common(1)[0][0]
        click_rank = rank_sum / pos if pos else 0.0
        by_group[group].append(
            Pair(group, query, doc_id, texts[doc_id], int(pos > neg), pos, neg, n, click_rank=click_rank)
        )

    pairs: list[Pair] = []
    for group_pairs in by_group.values():
        group_pairs.sort(key=lambda p: (-p.label, -(p.positive_votes if p.label else p.negative_votes), p.doc_id))
        pairs.extend(group_pairs[:max_pairs_per_query])
    pairs.sort(key=lambda p: (p.group, -p.label, p.doc_id))
    events = count_events(store, end)
    counts = {
        "events": int(events),
        "searches": len(searches),
        "queries": len({p.group for p in pairs}),
        "pairs": len(pairs),
        "positives": sum(p.label for p in pairs),
        "negatives": sum(1 - p.label for p in pairs),
        "conflicts_dropped": conflicts,
        "capped": sum(max(0, len(g) - max_pairs_per_query) for g in by_group.values()),
        "groups_merged": len(merged),
    }
    shown_rows = shown_results(store, end, None, start)
    filters = search_filters(store, start)
    next_traffic = _logged_searches(latest, shown_rows, texts, merged, filters)
    counts["next_traffic_searches"] = len(next_traffic)
    latest_ids = {s.search_id for s in next_traffic}
    shown: dict[str, set[str]] = defaultdict(set)
    for search_id, query, doc_id, *_ in shown_rows:
        if search_id not in latest_ids:
            key = normalise_query(query)
            shown[merged.get(key, key)].add(doc_id)
    counts["filtered_searches"] = sum(1 for search_id in searches if search_id in filters)
    group_filters = _group_filters(rows, filters, merged)
    return MinedPairs(pairs, start, end, counts, next_traffic, cut, dict(shown), group_filters)


def _group_filters(
    rows: list[tuple], filters: dict[str, dict[str, Any]], merged: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    """Group -> the distinct filters of its searches, only for groups none of whose searches was unfiltered."""
    seen: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    unfiltered: set[str] = set()
    for search_id, query, *_ in rows:
        key = normalise_query(query)
        group = merged.get(key, key)
        if search_id in filters:
            seen[group][json.dumps(filters[search_id], sort_keys=True)] = filters[search_id]
        else:
            unfiltered.add(group)
    return {group: list(found.values()) for group, found in seen.items() if group not in unfiltered}


def _split_latest(rows: list[tuple], percent: int) -> tuple[list[tuple], list[tuple], datetime | None]:
    """(earlier rows, rows of the latest `percent` of searches, the first search time of those); rows come
    in time order, and a search is never cut in two."""
    if percent <= 0 or not rows:
        return rows, [], None
    order = list(dict.fromkeys(r[0] for r in rows))  # searches in time order
    n_latest = len(order) * percent // 100
    if n_latest == 0:
        return rows, [], None
    latest = set(order[-n_latest:])
    earlier = [r for r in rows if r[0] not in latest]
    held = [r for r in rows if r[0] in latest]
    return earlier, held, held[0][5]


def _logged_searches(
    rows: list[tuple],
    shown_rows: list[tuple],
    texts: dict[str, str],
    merged: dict[str, str],
    filters: dict[str, dict[str, Any]],
) -> list[LoggedSearch]:
    """One LoggedSearch per search with a click on a document that still exists; `ranks` holds every result
    the search showed (what its feedback judged: clicked, or shown and not clicked)."""
    by_search: dict[str, list[tuple]] = defaultdict(list)
    for row in rows:
        by_search[row[0]].append(row)
    shown: dict[str, dict[str, int]] = defaultdict(dict)
    for search_id, _query, doc_id, rank, _clicked in shown_rows:
        if search_id in by_search and doc_id in texts:
            shown[search_id][doc_id] = int(rank)
    out = []
    for search_id, signals in by_search.items():
        clicked = frozenset(r[2] for r in signals if r[3] and not r[4] and r[2] in texts)
        key = normalise_query(signals[0][1])
        if clicked and key:
            ranks = shown[search_id] or {r[2]: int(r[6]) for r in signals}
            group = merged.get(key, key)
            out.append(LoggedSearch(search_id, group, signals[0][1], clicked, ranks, filters.get(search_id)))
    return out


def _merge_similar(keys: list[str], encoder: Any, threshold: float) -> dict[str, str]:
    """Map each group key to a representative when its cosine to it exceeds the threshold (union-find)."""
    if encoder is None or len(keys) < 2:
        return {}
    vectors = encoder.encode(keys)
    parent = list(range(len(keys)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    chunk = 2048
    for start in range(0, len(keys), chunk):
        sims = vectors[start : start + chunk] @ vectors.T
        rows, cols = np.nonzero(sims > threshold)
        for r, c in zip(rows + start, cols, strict=True):
            if r < c:
                parent[find(int(c))] = find(int(r))
    return {keys[i]: keys[find(i)] for i in range(len(keys)) if find(i) != i}


def add_mined_negatives(mined: MinedPairs, model: Any, corpus: dict[str, str], per_query: int, margin: float) -> int:
    """Add hard negatives from the corpus with sentence-transformers' `mine_hard_negatives`.

    A candidate counts only if it scores at least `margin` below the positive (absolute margin), so that
    unlabelled near-duplicates of the positive are not taught as negatives.

    Args:
        mined: pairs to extend in place (only training pairs should be passed).
        model: the incumbent SentenceTransformer.
        corpus: doc id -> text.
        per_query: negatives per (query, positive).
        margin: absolute score margin below the positive.

    Returns:
        The number of pairs added.
    """
    from datasets import Dataset
    from sentence_transformers import mine_hard_negatives

    positives = [p for p in mined.pairs if p.label == 1]
    if not positives or per_query < 1:
        return 0
    texts = list(corpus.values())
    id_of = {text: doc_id for doc_id, text in corpus.items()}
    dataset = Dataset.from_dict({"query": [p.query for p in positives], "positive": [p.doc_text for p in positives]})
    result = mine_hard_negatives(
        dataset,
        model,
        corpus=texts,
        num_negatives=per_query,
        absolute_margin=margin,
        output_format="labeled-pair",
        verbose=False,
        batch_size=64,
    )
    known = {(p.group, p.doc_id) for p in mined.pairs}
    group_of = {p.query: p.group for p in positives}
    added = 0
    for row in result:
        if row["label"] != 0:
            continue
        group, doc_id = group_of[row["query"]], id_of.get(row["positive"])
        if doc_id is None or (group, doc_id) in known:
            continue
        known.add((group, doc_id))
        mined.pairs.append(Pair(group, row["query"], doc_id, row["positive"], 0, 0, 0, 0, source="mined"))
        added += 1
    mined.counts["mined_negatives"] = added
    mined.counts["negatives"] = mined.counts.get("negatives", 0) + added
    mined.counts["pairs"] = len(mined.pairs)
    return added


def write_snapshot(mined: MinedPairs, path: Path) -> Path:
    """Export the pairs to Parquet with the event window and counts in the file's metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = mined.to_table()
    meta = {
        b"flywheel.window_start": (mined.window_start.isoformat() if mined.window_start else "").encode(),
        b"flywheel.window_end": mined.window_end.isoformat().encode(),
        b"flywheel.counts": json.dumps(mined.counts).encode(),
    }
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(path)
    return path
