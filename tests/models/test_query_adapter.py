"""Query adapters as served: an exact, pickle-free save/load round trip; outputs stay unit length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.models.query_adapter import QueryAdapter, normalise


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
