"""ONNX export of the tiny model: fp32 and int8 graphs, parity, provenance, done once, nothing left on failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.errors import ConfigError
from flywheel.models import export as export_module
from flywheel.models.export import FILES, ONNX_DIR, export_version, read_export
from flywheel.models.loading import load_model
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import Registry
from tests.helpers.factories import PARITY_TEXTS


def test_export_round_trip_parity_and_provenance(registry: Registry, tiny_model_path: Path) -> None:
    entry = registry.get("v1")
    folder, meta = export_version(registry, entry)
    assert folder == registry.dir / "v1" / ONNX_DIR
    assert all((folder / name).is_file() for name in FILES.values())
    assert meta["source_version"] == "v1" and meta["opset"] >= 14
    assert meta["quantization"]["per_channel"] is True
    assert meta["parity"]["fp32"]["max_abs_diff"] < 1e-4
    reference = load_model(str(tiny_model_path), "cpu").encode(PARITY_TEXTS, normalize_embeddings=True)
    fp32 = OnnxModel(folder).encode(PARITY_TEXTS)
    int8 = OnnxModel(folder, int8=True).encode(PARITY_TEXTS)
    assert fp32.dtype == np.float32 and fp32.shape == reference.shape
    np.testing.assert_allclose(fp32, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", int8, reference).min() > 0.99
    assert (folder / FILES["int8"]).stat().st_size < (folder / FILES["fp32"]).stat().st_size
    # Done once: a second call reuses the export.
    assert export_version(registry, entry)[1]["created_at"] == meta["created_at"]


def test_failed_export_leaves_nothing_behind(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise ConfigError("quantizer exploded")

    monkeypatch.setattr(export_module, "_quantize", boom)
    with pytest.raises(ConfigError, match="quantizer exploded"):
        export_version(registry, registry.get("v1"))
    assert sorted(p.name for p in (registry.dir / "v1").iterdir()) == ["meta.json"]
    assert read_export(registry.dir / "v1" / ONNX_DIR) is None
