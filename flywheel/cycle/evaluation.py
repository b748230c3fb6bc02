"""How a cycle compares incumbent and candidate: pair error and retrieval, each scored as it would serve.

Retrieval is judged in two views, each a paired comparison with a bootstrap CI and the minimal detectable
effect at its size: *unseen queries* (query groups held out by hash, never trained on) and *next traffic*
(the latest searches, held out by time as they came, repeats included). A search that applied a metadata
filter is ranked only among the documents that filter allows, so a model is judged on the lists users could
have seen, never credited or blamed for documents the filter kept from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import numpy as np

from flywheel.cycle.mining import MinedPairs
from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter, normalise
from flywheel.scoring.pair_error import compare_scored, cosine_scores, paired_bootstrap
from flywheel.scoring.ranking import compare_scores
from flywheel.types import LabelledPair


def adapted_pair_error(
    encoder: Encoder, adapter: QueryAdapter | None, challenger: Any, pairs: list[LabelledPair], seed: int
) -> dict[str, Any] | None:
    """Pair error of (encoder + query adapter) against a full challenger model on labelled text pairs."""
    if not pairs:
        return None
    queries = AdaptedQueries(encoder.version, encoder.encode, adapter).encode([p.query for p in pairs])
    docs = normalise(encoder.encode([p.document for p in pairs]))
    return compare_scored(pairs, (queries * docs).sum(1), cosine_scores(challenger, pairs), seed)


def heldout_queries(heldout_rows: list[Any]) -> tuple[dict[str, str], dict[str, set[str]]]:
    """The held-out query groups with a click: (group -> query text, group -> clicked document ids)."""
    queries = {p.group: p.query for p in heldout_rows if p.label == 1}
    relevant: dict[str, set[str]] = {}
    for p in heldout_rows:
        if p.label == 1:
            relevant.setdefault(p.group, set()).add(p.doc_id)
    return queries, relevant


def retrieval_block(inc: dict[str, np.ndarray], cand: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """The report's retrieval section from both models' per-query metrics: means, paired CIs, and per metric
    one {"incumbent", "candidate", "delta", "ci95"} entry (what the gate and the HTML page read)."""
    out = compare_scores(inc, cand, seed=seed)
    for m, change in out["delta"].items():
        out[m] = {
            "incumbent": out["incumbent"][m],
            "candidate": out["candidate"][m],
            "delta": change["mean"],
            "ci95": change["ci95"],
        }
    return out


Scorer = Callable[..., dict[str, np.ndarray]]
"""(side "incumbent" | "candidate", key -> query text, key -> relevant ids, key -> candidate ids or None)
-> per-query metrics (with candidates: each query ranks only those, a None entry the whole corpus, see
`retrieval_scores`)."""


def filter_restrictions(
    mined: MinedPairs, matching: Callable[[dict[str, Any]], set[str]]
) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """The documents each held-out key may be ranked among, from the filters its searches applied.

    Args:
        mined: the mined pairs (their groups' filters and the next-traffic searches with theirs).
        matching: a filter -> the ids of the documents it allows (the index answers, as for a search).

    Returns:
        (query group -> allowed ids, for the unseen view: the union over the group's searches; next-traffic
        search id -> allowed ids); a key that is absent is not restricted. One lookup per distinct filter.
    """
    found: dict[str, set[str]] = {}

    def allowed(metadata_filter: dict[str, Any]) -> set[str]:
        key = json.dumps(metadata_filter, sort_keys=True)
        if key not in found:
            found[key] = matching(metadata_filter)
        return found[key]

    groups = {group: set().union(*(allowed(f) for f in filters)) for group, filters in mined.filters.items()}
    searches = {s.search_id: allowed(s.filter) for s in mined.next_traffic if s.filter}
    return groups, searches


# Two-sided 5% test at 80% power: an effect smaller than (1.96 + 0.84) standard errors is likely missed.
_MDE_Z = 1.959964 + 0.841621


def minimal_detectable_effect(inc: np.ndarray, cand: np.ndarray) -> float | None:
    """The smallest mean change of a per-query metric this many queries would detect (80% power, 5% two-sided).

    Uses the spread of the paired differences; when the two sides agree everywhere (an identical candidate),
    the incumbent's own spread stands in, so the figure still says how much data there is.
    """
    n = len(inc)
    if n < 2:
        return None
    spread = float(np.std(np.asarray(cand) - np.asarray(inc), ddof=1))
    if spread == 0.0:
        spread = float(np.std(inc, ddof=1))
    return round(_MDE_Z * spread / np.sqrt(n), 5)


def view_block(inc: dict[str, np.ndarray], cand: dict[str, np.ndarray], seed: int, parts: dict[str, set[str]]) -> dict:
    """A retrieval view: `retrieval_block` plus the MDE of nDCG@K and the nDCG@K change on named subsets."""
    out = retrieval_block(inc, cand, seed)
    metric = next(m for m in inc if m.startswith("ndcg@"))
    out["mde"] = {metric: minimal_detectable_effect(inc[metric], cand[metric])}
    ids = list(inc["query_ids"])
    out["parts"] = {}
    for name, keys in parts.items():
        rows = np.array([i for i, q in enumerate(ids) if q in keys], dtype=np.int64)
        if len(rows) < 2:
            out["parts"][name] = {"n_queries": int(len(rows))}
            continue
        mean, lo, hi = paired_bootstrap(inc[metric][rows], cand[metric][rows], seed=seed)
        out["parts"][name] = {
            "n_queries": int(len(rows)),
            "incumbent": float(inc[metric][rows].mean()),
            "candidate": float(cand[metric][rows].mean()),
            "delta": mean,
            "ci95": [lo, hi],
        }
    return out


def unseen_view(
    score: Scorer,
    heldout_rows: list[Any],
    train_rows: list[Any],
    seed: int,
    shown: dict[str, set[str]] | None = None,
    allowed: dict[str, set[str]] | None = None,
) -> dict[str, Any] | None:
    """Held-out query groups (never trained on), their clicked documents as relevant; split into queries whose
    clicked documents were also clicked in training (a learned prior over documents) and those whose were not.
    `shown` (group -> every document its searches showed) is each group's judged set for the judged ranking;
    `allowed` (group -> what its searches' filters allowed) restricts both rankings."""
    queries, relevant = heldout_queries(heldout_rows)
    if not queries:
        return None
    trained_docs = {p.doc_id for p in train_rows if p.label == 1}
    known = {g for g, docs in relevant.items() if docs & trained_docs}
    parts = {"clicked_in_training": known, "not_clicked_in_training": set(queries) - known}
    judged: dict[str, list[str]] = {g: sorted((shown or {}).get(g, ())) for g in queries}
    for p in heldout_rows:
        if p.group in judged and p.doc_id not in judged[p.group]:
            judged[p.group].append(p.doc_id)
    return _both_rankings(score, queries, relevant, judged, seed, parts, allowed)


def _both_rankings(
    score: Scorer,
    queries: dict[str, str],
    relevant: dict[str, set[str]],
    judged: dict[str, list[str]],
    seed: int,
    parts: dict[str, set[str]],
    allowed: dict[str, set[str]] | None = None,
) -> dict[str, Any]:
    """A view over the whole corpus, with the same view over each query's judged documents only under "judged":
    every result its searches showed. Under the incumbent, users clicked near the top because they read the top
    (position bias), so this ranking leans towards the incumbent: a conservative judge. Skips alone would lean
    the other way (the incumbent put every skip-above negative above a click, so any reshuffle looks better).

    With `allowed` (key -> the documents its filters allowed), a filtered key ranks only those, in both rankings.
    """
    allowed = {q: allowed[q] for q in queries if q in allowed} if allowed else {}
    corpus = {q: sorted(allowed[q]) if q in allowed else None for q in queries} if allowed else None
    judged = {q: [d for d in docs if q not in allowed or d in allowed[q]] for q, docs in judged.items()}
    out = view_block(
        score("incumbent", queries, relevant, corpus), score("candidate", queries, relevant, corpus), seed, parts
    )
    if allowed:
        out["filtered_queries"] = len(allowed)
    inc, cand = (score(side, queries, relevant, judged) for side in ("incumbent", "candidate"))
    out["judged"] = view_block(inc, cand, seed, parts)
    return out


def arrival_key(n: int) -> str:
    """The key of the n-th search of a window: scorers order their rows by key, and keyed by their random ids
    the same traffic's per-search values would reach the bootstrap in another order each time, moving the CI's
    ends; keyed by arrival they keep the order they came in."""
    return f"{n:09d}"


def next_traffic_view(
    score: Scorer, searches: list[Any], train_rows: list[Any], seed: int, allowed: dict[str, set[str]] | None = None
) -> dict[str, Any] | None:
    """The latest searches as they came (repeats included, so traffic-weighted), their clicks as relevant; split
    into searches repeating a trained query group and new ones. `allowed` (search id -> what its filter allowed)
    restricts both rankings of a filtered search."""
    if not searches:
        return None
    key = {s.search_id: arrival_key(n) for n, s in enumerate(searches)}
    queries = {key[s.search_id]: s.query for s in searches}
    relevant = {key[s.search_id]: set(s.clicked) for s in searches}
    trained = {p.group for p in train_rows}
    repeats = {key[s.search_id] for s in searches if s.group in trained}
    parts = {"repeated_queries": repeats, "new_queries": set(queries) - repeats}
    judged = {key[s.search_id]: list(s.ranks) for s in searches}
    allowed = {key[sid]: docs for sid, docs in allowed.items() if sid in key} if allowed else None
    out = _both_rankings(score, queries, relevant, judged, seed, parts, allowed)
    out["distinct_queries"] = len({s.group for s in searches})
    return out
