"""Query adapters: save/load round trip, training on cached vectors, logged query vectors, migration 3."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.cycle.runner import resolve_mode
from flywheel.learn.query_adapter import AdapterConfig, rotate_negatives, train_adapter
from flywheel.models.query_adapter import QueryAdapter, normalise
from flywheel.scoring.pair_error import compare_scored
from flywheel.serve.store import MIGRATIONS, Store
from flywheel.types import Impression, LabelledPair


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    adapter = QueryAdapter(
        "v3", "v1", rng.normal(size=(8, 8)).astype(np.float32), rng.normal(size=8).astype(np.float32)
    )
    path = adapter.save(tmp_path / "v3")
    assert path.name == "adapter.safetensors" and not list((tmp_path / "v3").glob("*.pkl"))
    loaded = QueryAdapter.load(tmp_path / "v3", "v3", "v1")
    assert np.array_equal(loaded.weight, adapter.weight) and np.array_equal(loaded.bias, adapter.bias)
    x = normalise(rng.normal(size=(5, 8)))
    assert np.allclose(loaded.apply(x), adapter.apply(x))
    assert np.allclose(np.linalg.norm(adapter.apply(x), axis=1), 1.0, atol=1e-5)
    assert np.allclose(QueryAdapter.identity(8).apply(x), x, atol=1e-6)
    with pytest.raises(FileNotFoundError):
        QueryAdapter.load(tmp_path / "nope", "v9", "v1")


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


def test_compare_scored_matches_labels_and_refuses_one_class() -> None:
    pairs = [LabelledPair(f"q{i}", f"d{i}", i % 2) for i in range(200)]
    labels = np.array([p.label for p in pairs], float)
    noise = np.random.default_rng(1).normal(scale=0.4, size=200)
    out = compare_scored(pairs, labels + noise, labels + noise / 4, seed=0)
    assert out["candidate"]["error_rate"] < out["incumbent"]["error_rate"]
    assert out["delta_ci95"][1] < 0 and out["n_test"] + out["n_calibration"] == 200
    assert compare_scored([LabelledPair("a", "b", 1)] * 10, np.ones(10), np.ones(10), seed=0) is None


def test_resolve_mode_defaults_to_adapter_on_cpu() -> None:
    assert resolve_mode(Settings(device="cpu")) == "adapter"
    assert resolve_mode(Settings(device="cuda")) == "full"
    assert resolve_mode(Settings(device="cpu", cycle_mode="full")) == "full"
    assert resolve_mode(Settings(device="cpu"), "full") == "full"


def test_logged_query_vectors_are_compact_and_per_base(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb")
    vector = normalise(np.random.default_rng(0).normal(size=384))
    store.log_search(
        "s1", "how to learn", 1, "v2", [Impression(1, "d1", 0.5)], query_vector=vector, vector_version="v1"
    )
    store.log_search("s2", "other base", 1, "v3", [], query_vector=vector, vector_version="v3")
    store.log_search("s3", "no vector", 1, "v1", [])
    blob = store.query("SELECT query_vector FROM searches WHERE search_id = 's1'")[0][0]
    assert len(blob) == 384 * 2  # float16
    got = store.query_vectors("v1")
    assert list(got) == ["how to learn"]
    assert float(got["how to learn"] @ vector) > 0.999
    assert store.query_vectors("v1", {"something else"}) == {}
    store.close()


def test_migration_upgrades_an_existing_database(tmp_path: Path) -> None:
    """A DB written before migration 3 keeps its rows; old searches have no vector, new ones do."""
    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)")
    for version, name, sql in MIGRATIONS[:2]:
        con.execute(sql)
        con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [version, name])
    con.execute("INSERT INTO searches VALUES ('old', now(), 'old query', 3, 'v1', NULL, NULL)")
    con.execute("INSERT INTO cycles (cycle_id, trigger, state, started_at) VALUES ('c-old', 'api', 'promoted', now())")
    con.close()

    store = Store(path)
    assert store.schema_version() == 3
    assert store.query("SELECT query, query_vector, vector_version FROM searches") == [("old query", None, None)]
    assert store.query("SELECT kind FROM cycles") == [(None,)]
    store.log_search("new", "new query", 3, "v1", [], query_vector=np.ones(4, np.float32), vector_version="v1")
    assert set(store.query_vectors("v1")) == {"new query"}
    store.close()
    assert Store(path).schema_version() == 3  # runs once
