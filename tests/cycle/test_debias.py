"""The adapter cycle's debiasing step on a real store: a curve when the log identifies it, a reason when not."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from flywheel.cycle.debias import click_weights
from flywheel.cycle.mining import mine_pairs
from flywheel.serve.store import Store
from flywheel.types import Document, Event, Impression

DOCS = [f"d{i}" for i in range(12)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "b.duckdb")
    with s.transaction() as con:
        s.upsert_documents(con, [Document(d, f"text {d}") for d in DOCS])
    yield s
    s.close()


def _log(store: Store, shuffle: bool, searches: int = 1500, seed: int = 0) -> None:
    """Users read rank r with probability 1/r and click what they read if it is relevant (d0..d3 are)."""
    rng = random.Random(seed)
    events = []
    for n in range(searches):
        q = n % 5
        shown = DOCS[:10] if not shuffle else rng.sample(DOCS, 10)
        store.log_search(f"s{n}", f"question {q}", 10, "v1", [Impression(r + 1, d, 1.0) for r, d in enumerate(shown)])
        for r, d in enumerate(shown):
            if d in ("d0", "d1", "d2", "d3") and rng.random() < 1 / (r + 1):
                events.append(Event(f"e{n}-{d}", f"s{n}", d, "click"))
    store.add_events(events)


def test_a_ranker_that_never_changed_leaves_the_curve_unidentified(store: Store) -> None:
    _log(store, shuffle=False)
    weights, report = click_weights(store, mine_pairs(store), np.array([1.0, 3.0]), 10)
    assert weights is None and report["estimated"] is False and report["reason"]


def test_a_ranker_that_changes_gives_a_curve_and_deep_clicks_weigh_more(store: Store) -> None:
    _log(store, shuffle=True)
    weights, report = click_weights(store, mine_pairs(store), np.array([1.0, 2.0, 4.0]), 10)
    assert report["estimated"] is True and report["theta"][0] == 1.0
    assert report["theta"][1] == pytest.approx(0.5, abs=0.15)  # the users' curve: 1 / r
    assert weights is not None and weights[0] == pytest.approx(1.0) and weights[0] < weights[1] < weights[2]
