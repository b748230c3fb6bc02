"""ONNX export and the int8 accuracy guard on the tiny model: parity, provenance, atomicity, refusal, CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.errors import ConfigError
from flywheel.models import export as export_module
from flywheel.models.encoder import compatible, load_encoder
from flywheel.models.export import FILES, ONNX_DIR, export_version, read_export
from flywheel.models.guard import ensure_export, run_guard, verdict
from flywheel.models.loading import load_model
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import Registry
from flywheel.serve.service import Service
from tests.helpers.onnx import break_int8

TEXTS = ["how do i learn python", "the best pasta recipe for dinner", "why is the sky blue", "x", "guitar " * 80]


@pytest.fixture
def registry(service: Service) -> Registry:
    """The registry of an opened data dir (v1 = the tiny base model, loaded by path)."""
    return service.registry


def test_export_round_trip_parity_and_provenance(registry: Registry, tiny_model_path: Path) -> None:
    entry = registry.get("v1")
    folder, meta = export_version(registry, entry)
    assert folder == registry.dir / "v1" / ONNX_DIR
    assert all((folder / name).is_file() for name in FILES.values())
    assert meta["source_version"] == "v1" and meta["opset"] >= 14
    assert meta["quantization"]["per_channel"] is True
    assert meta["parity"]["fp32"]["max_abs_diff"] < 1e-4
    reference = load_model(str(tiny_model_path), "cpu").encode(TEXTS, normalize_embeddings=True)
    fp32 = OnnxModel(folder).encode(TEXTS)
    int8 = OnnxModel(folder, int8=True).encode(TEXTS)
    assert fp32.dtype == np.float32 and fp32.shape == reference.shape
    np.testing.assert_allclose(fp32, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(int8, axis=1), 1.0, atol=1e-5)
    assert np.einsum("ij,ij->i", int8, reference).min() > 0.99
    assert (folder / FILES["int8"]).stat().st_size < (folder / FILES["fp32"]).stat().st_size
    # Done once: a second call reuses the export.
    assert export_version(registry, entry)[1]["created_at"] == meta["created_at"]


def test_onnx_encoder_needs_neither_torch_nor_transformers(registry: Registry) -> None:
    folder, _ = export_version(registry, registry.get("v1"))
    code = (
        "import sys; from pathlib import Path; from flywheel.models.onnx import OnnxModel; "
        "v = OnnxModel(Path(sys.argv[1]), int8=True).encode(['hello there', 'x']); "
        "heavy = sorted({'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)); "
        "print(v.shape, heavy)"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root}
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(2, 32) []"


def test_failed_export_leaves_nothing_behind(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_: object) -> None:
        raise ConfigError("quantizer exploded")

    monkeypatch.setattr(export_module, "_quantize", boom)
    with pytest.raises(ConfigError, match="quantizer exploded"):
        export_version(registry, registry.get("v1"))
    assert sorted(p.name for p in (registry.dir / "v1").iterdir()) == ["meta.json"]
    assert read_export(registry.dir / "v1" / ONNX_DIR) is None


def test_guard_passes_a_faithful_int8_and_refuses_a_broken_one(
    registry: Registry, settings: Settings, guard_file: Path
) -> None:
    entry = registry.get("v1")
    folder, meta = ensure_export(registry, entry, settings)
    guard = meta["guard"]
    assert guard["passed"], guard["reason"]
    assert guard["data"] == "dev.jsonl.gz" and guard["pairs"] > 1000
    assert guard["mean_cosine"] > settings.int8_min_cosine
    assert load_encoder(registry, entry, settings, backend="onnx-int8").backend == "onnx-int8"

    break_int8(folder / FILES["int8"])
    settings = settings.model_copy(update={"guard_pairs": guard_file})
    refused = run_guard(registry, entry, settings)["guard"]
    assert not refused["passed"]
    assert "mean cosine" in refused["reason"] and refused["mean_cosine"] < settings.int8_min_cosine
    assert read_export(folder)["guard"]["passed"] is False  # the verdict is recorded beside the model
    encoder = load_encoder(registry, entry, settings, backend="onnx-int8")
    assert encoder.backend == "onnx"  # fell back to fp32
    np.testing.assert_allclose(encoder.encode(TEXTS), OnnxModel(folder).encode(TEXTS), atol=1e-6)
    # Thresholds are read when an encoder loads: a user who accepts anything gets the broken int8 graph.
    anything = settings.model_copy(update={"int8_max_error_increase": 1.0, "int8_min_cosine": 0.0})
    assert load_encoder(registry, entry, anything, backend="onnx-int8").backend == "onnx-int8"


def test_guard_thresholds_are_configurable(settings: Settings) -> None:
    """The verdict is today's thresholds applied to the recorded measurement."""
    measured = {"fp32_error": 0.20, "int8_error": 0.206, "error_increase": 0.006, "mean_cosine": 0.99}
    refused = verdict(measured, settings)
    assert not refused["passed"] and "+0.60 pt > +0.50 pt" in refused["reason"]
    lenient = settings.model_copy(update={"int8_max_error_increase": 0.01})
    assert verdict(measured, lenient)["passed"]
    low = verdict({**measured, "mean_cosine": 0.9}, lenient)
    assert not low["passed"] and "mean cosine" in low["reason"]


def test_backend_settings() -> None:
    assert Settings(encoder_backend="onnx-int8").bulk_backend == "onnx-int8"
    assert Settings(encoder_backend="torch", bulk_encoder_backend="onnx").bulk_backend == "onnx"
    with pytest.raises(ConfigError, match="same precision"):
        Settings.load(encoder_backend="onnx-int8", bulk_encoder_backend="torch")
    with pytest.raises(ConfigError, match="encoder_backend"):
        Settings.load(encoder_backend="tensorrt")
    assert compatible(None, "onnx") and compatible("torch", "onnx") and compatible("onnx-int8", "onnx-int8")
    assert not compatible("onnx", "onnx-int8") and not compatible(None, "onnx-int8")


def test_cli_export(tmp_path: Path, tiny_model_path: Path, guard_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_BASE_MODEL", str(tiny_model_path))
    monkeypatch.setenv("FLYWHEEL_GUARD_PAIRS", str(guard_file))
    data = tmp_path / "data"
    Service.open(Settings(data_dir=data, base_model=str(tiny_model_path))).close()
    runner = CliRunner()
    result = runner.invoke(app, ["export", "v1", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    assert "int8 accuracy guard passed" in result.output
    assert (data / "models" / "v1" / ONNX_DIR / FILES["int8"]).is_file()
    missing = runner.invoke(app, ["export", "v9", "--data-dir", str(data)])
    assert missing.exit_code == 4 and "v9" in missing.output
