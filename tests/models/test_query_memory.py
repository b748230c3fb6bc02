"""Query memory: repeats move to what users chose, unrelated queries stay put, and it travels with its adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.learn.query_memory import MemoryConfig, build_memory
from flywheel.models.query_adapter import QueryAdapter, normalise
from flywheel.models.query_memory import QueryMemory


def _world(seed: int = 0, n_docs: int = 50, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return normalise(rng.normal(size=(n_docs, dim))), normalise(rng.normal(size=(8, dim)))


def test_a_repeated_query_ranks_its_clicked_document_first_and_a_far_one_is_unchanged() -> None:
    docs, queries = _world()
    base_rank = np.argsort(-(queries[0] @ docs.T))
    clicked = int(base_rank[4])  # users clicked the 5th result and passed over the first
    memory = build_memory(queries[:1], docs, np.array([[0, clicked, 1], [0, int(base_rank[0]), 0]]))
    adapter = QueryAdapter("v2", "v1", np.eye(16, dtype=np.float32), np.zeros(16, np.float32), memory)
    moved = adapter.apply(queries[:1])
    assert int(np.argmax(moved @ docs.T)) == clicked
    far = normalise(queries[1:2] - 2 * queries[0:1] * (queries[1:2] @ queries[0]))  # cosine to the key < 0.8
    assert float(far[0] @ queries[0]) < memory.threshold
    np.testing.assert_allclose(adapter.apply(far), far, atol=1e-6)


def test_the_shift_fades_between_the_threshold_and_an_exact_repeat() -> None:
    docs, queries = _world(1)
    memory = build_memory(queries[:1], docs, np.array([[0, 3, 1]]), MemoryConfig(threshold=0.5))
    key = queries[0]
    other = normalise(np.cross(key[:3], [1.0, 0, 0]).tolist() + [0.0] * 13)  # any direction orthogonal-ish
    moves = []
    for alpha in (0.55, 0.75, 1.0):  # cosine to the key rises towards 1
        q = normalise(alpha * key + np.sqrt(max(0.0, 1 - alpha**2)) * other)
        moves.append(float(np.linalg.norm(memory.shift(q[None], q[None])[0] - q)))
    assert moves[0] < moves[1] < moves[2]


def test_bounded_memory_keeps_the_most_asked_queries() -> None:
    docs, queries = _world(2)
    rows = np.array([[q, q, 1] for q in range(8)])
    memory = build_memory(
        queries, docs, rows, MemoryConfig(max_entries=3), popularity=np.array([1, 9, 2, 8, 3, 7, 4, 0])
    )
    assert memory.size == 3
    np.testing.assert_allclose(memory.keys, normalise(queries[[1, 3, 5]]), atol=1e-6)


def test_queries_without_a_click_are_not_remembered_and_negatives_push_away() -> None:
    docs, queries = _world(3)
    memory = build_memory(
        queries[:2], docs, np.array([[0, 4, 1], [0, 5, 0], [1, 6, 0]]), MemoryConfig(beta=1, gamma=0.5)
    )
    assert memory.size == 1
    np.testing.assert_allclose(memory.shifts[0], docs[4] - 0.5 * docs[5], atol=1e-6)


def test_memory_is_saved_with_its_adapter_and_old_adapters_still_load(tmp_path: Path) -> None:
    docs, queries = _world(4)
    memory = build_memory(queries, docs, np.array([[q, q + 10, 1] for q in range(8)]))
    adapter = QueryAdapter("v2", "v1", np.eye(16, dtype=np.float32) * 1.5, np.ones(16, np.float32), memory)
    adapter.save(tmp_path / "with")
    loaded = QueryAdapter.load(tmp_path / "with", "v2", "v1")
    assert loaded.memory is not None and loaded.memory.size == 8
    np.testing.assert_allclose(loaded.apply(queries), adapter.apply(queries), atol=1e-6)
    QueryAdapter("v3", "v1", adapter.weight, adapter.bias).save(tmp_path / "without")
    assert QueryAdapter.load(tmp_path / "without", "v3", "v1").memory is None


def test_malformed_memories_are_refused() -> None:
    with pytest.raises(ValueError, match="must be"):
        QueryMemory(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="threshold"):
        QueryMemory(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32), threshold=1.5)
