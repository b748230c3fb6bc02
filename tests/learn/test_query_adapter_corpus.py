"""The corpus-aware query adapter: it learns a shift that in-batch negatives cannot see, and stops early."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.learn.query_adapter import AdapterConfig, train_adapter
from flywheel.models.query_adapter import normalise


def _shifted_world(seed: int = 0, n_docs: int = 400, n_queries: int = 600, dim: int = 16):
    """Queries are a fixed rotation of their answer plus noise: a map exists that every query shares."""
    rng = np.random.default_rng(seed)
    docs = normalise(rng.normal(size=(n_docs, dim)))
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    answers = rng.integers(0, n_docs, n_queries)
    queries = normalise(
        docs[answers] @ (0.3 * np.eye(dim) + 0.7 * rotation).T + 0.1 * rng.normal(size=(n_queries, dim))
    )
    return docs, queries, answers


def _mrr(queries: np.ndarray, docs: np.ndarray, answers: np.ndarray, weight=None, bias=None) -> float:
    q = queries if weight is None else normalise(queries @ weight.T + bias)
    scores = q @ docs.T
    ranks = (scores > scores[np.arange(len(q)), answers][:, None]).sum(1) + 1
    return float((1.0 / ranks).mean())


def test_corpus_negatives_generalise_to_unseen_queries_better_than_in_batch() -> None:
    docs, queries, answers = _shifted_world()
    train, test = np.arange(420), np.arange(420, 600)
    examples = np.stack([train, answers[train], -np.ones(len(train), np.int64)], axis=1)
    results = {}
    for negatives in ("corpus", "in-batch"):
        config = AdapterConfig(negatives=negatives, epochs=30, batch_size=32, validation_share=0.0, seed=1)
        trained = train_adapter(queries, docs, examples, None, config)
        results[negatives] = _mrr(queries[test], docs, answers[test], trained.weight, trained.bias)
    base = _mrr(queries[test], docs, answers[test])
    assert results["corpus"] > base + 0.3, (base, results)
    assert results["corpus"] > results["in-batch"] + 0.05, (base, results)


def test_early_stopping_keeps_the_best_epoch_on_set_aside_queries() -> None:
    docs, queries, answers = _shifted_world(seed=2)
    examples = np.stack([np.arange(600), answers, -np.ones(600, np.int64)], axis=1)
    trained = train_adapter(queries, docs, examples, None, AdapterConfig(epochs=12, validation_share=0.2, patience=3))
    curve = trained.validation_mrr
    assert curve is not None and len(curve) == len(trained.loss_curve) + 1  # epoch 0 is the identity
    assert trained.best_epoch == int(np.argmax(curve))
    assert curve[trained.best_epoch] > curve[0]  # training helped the queries it never trained on


def test_the_large_corpus_path_ranks_against_each_querys_nearest_documents() -> None:
    docs, queries, answers = _shifted_world(seed=3)
    examples = np.stack([np.arange(600), answers, -np.ones(600, np.int64)], axis=1)
    config = AdapterConfig(full_corpus_max=100, corpus_top_n=50, epochs=10, validation_share=0.0)  # 400 > 100
    trained = train_adapter(queries, docs, examples, None, config)
    assert _mrr(queries, docs, answers, trained.weight, trained.bias) > _mrr(queries, docs, answers) + 0.05


def test_weights_must_match_the_examples_and_unknown_negatives_are_refused() -> None:
    docs, queries, answers = _shifted_world(seed=4)
    examples = np.stack([np.arange(600), answers, -np.ones(600, np.int64)], axis=1)
    with pytest.raises(ValueError, match="weights"):
        train_adapter(queries, docs, examples, None, AdapterConfig(epochs=1), weights=np.ones(3))
    with pytest.raises(ValueError, match="negatives"):
        train_adapter(queries, docs, examples, None, AdapterConfig(negatives="random"))
