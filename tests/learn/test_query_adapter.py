"""Training query adapters on cached vectors: seeded, learns what identity cannot; negatives per positive."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.learn.query_adapter import AdapterConfig, rotate_negatives, train_adapter
from flywheel.models.query_adapter import QueryAdapter, normalise


def _rotated_world(seed: int = 0, n: int = 200, dim: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Queries whose clicked document is a fixed rotation of the query: a linear map can learn it, identity
    cannot. Returns (queries, docs, examples, pairs)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    queries = normalise(rng.normal(size=(n, dim)))
    docs = normalise(np.concatenate([queries @ rotation.T, rng.normal(size=(n, dim))]))
    negatives = n + rng.permutation(n)
    examples = np.stack([np.arange(n), np.arange(n), negatives], axis=1)
    clicked = np.column_stack([np.arange(n), np.arange(n), np.ones(n, int)])
    skipped = np.column_stack([np.arange(n), negatives, np.zeros(n, int)])
    pairs = np.concatenate([clicked, skipped]).astype(np.int64)
    return queries, docs, examples, pairs


def test_training_is_seeded_and_learns_what_identity_cannot() -> None:
    queries, docs, examples, pairs = _rotated_world()
    config = AdapterConfig(epochs=12, learning_rate=3e-2, batch_size=100, seed=7)
    first = train_adapter(queries, docs, examples, pairs, config)
    again = train_adapter(queries, docs, examples, pairs, config)
    assert np.array_equal(first.weight, again.weight), "same seed, same weights"
    assert first.loss_curve[-1][1] < first.loss_curve[0][1]
    adapter = QueryAdapter("v2", "v1", first.weight, first.bias)
    n = len(queries)
    positive = (adapter.apply(queries) * docs[:n]).sum(1)
    base_positive = (queries * docs[:n]).sum(1)
    assert positive.mean() > 0.8 > base_positive.mean() + 0.5
    assert first.to_dict()["hyperparameters"]["seed"] == 7 and "weight" not in first.to_dict()
    with pytest.raises(ValueError, match="unknown adapter loss"):
        train_adapter(queries, docs, examples, pairs, AdapterConfig(loss="nope"))


def test_rotate_negatives_gives_each_positive_the_next_negative_and_minus_one_without() -> None:
    rows = [(0, 10, 1), (0, 20, 0), (0, 11, 1), (1, 30, 0), (0, 12, 1), (0, 21, 0), (2, 40, 1), (2, 41, 1)]
    examples = rotate_negatives(rows)
    assert examples.dtype == np.int64 and examples.shape == (5, 3)
    assert examples.tolist() == [[0, 10, 20], [0, 11, 21], [0, 12, 20], [2, 40, -1], [2, 41, -1]]
    assert rotate_negatives([(1, 30, 0)]).shape == (0, 3), "a query with only negatives gives no example"
    assert rotate_negatives([]).shape == (0, 3)
