"""The int8 accuracy guard: it passes a faithful int8 graph, refuses a broken one, and records its verdict."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.models.encoder import load_encoder
from flywheel.models.export import FILES, ONNX_DIR, export_version, read_export
from flywheel.models.guard import ensure_export, guard_pairs, measure_guard, run_guard, verdict
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import Registry
from tests.helpers.factories import PARITY_TEXTS, world_pairs
from tests.helpers.onnx import break_int8


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
    np.testing.assert_allclose(encoder.encode(PARITY_TEXTS), OnnxModel(folder).encode(PARITY_TEXTS), atol=1e-6)
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


def test_a_graph_measured_against_itself_passes_with_no_change(registry: Registry, settings: Settings) -> None:
    folder, _ = export_version(registry, registry.get("v1"))
    pairs = world_pairs()
    guard = measure_guard(OnnxModel(folder), OnnxModel(folder), pairs, settings, "world pairs")
    assert guard["passed"] and guard["error_increase"] == 0.0 and guard["delta_ci95"] == [0.0, 0.0]
    assert guard["fp32_error"] == guard["int8_error"]
    assert guard["mean_cosine"] == pytest.approx(1.0, abs=1e-6) and guard["min_cosine"] == pytest.approx(1.0, abs=1e-6)
    assert guard["reason"] == "pair error +0.00 pt vs fp32 (allowed +0.50), mean cosine 1.0000 (needs 0.98)"
    assert (guard["pairs"], guard["data"]) == (len(pairs), "world pairs") and 0 < guard["n_test"] < len(pairs)


def test_outputs_that_diverge_are_refused_with_the_numbers_that_failed(
    registry: Registry, settings: Settings, tmp_path: Path
) -> None:
    folder, _ = export_version(registry, registry.get("v1"))
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    break_int8(broken / FILES["int8"])
    guard = measure_guard(OnnxModel(folder), OnnxModel(broken, int8=True), world_pairs(), settings, "world pairs")
    assert not guard["passed"]
    assert guard["error_increase"] == pytest.approx(guard["int8_error"] - guard["fp32_error"])
    assert guard["mean_cosine"] < settings.int8_min_cosine
    assert f"mean cosine to fp32 {guard['mean_cosine']:.4f} < 0.98" in guard["reason"]
    assert guard["min_cosine"] <= guard["mean_cosine"]


def test_run_guard_measures_the_cycle_pairs_or_falls_back_to_the_guard_file(
    registry: Registry, settings: Settings, guard_file: Path
) -> None:
    entry = registry.get("v1")
    settings = settings.model_copy(update={"guard_pairs": guard_file})
    on_cycle = run_guard(registry, entry, settings, world_pairs(), "cycle held-out pairs")["guard"]
    assert (on_cycle["data"], on_cycle["pairs"], on_cycle["passed"]) == ("cycle held-out pairs", 80, True)
    # One label only: no threshold can be fitted, so the guard measures the configured guard file instead.
    positives = [p for p in world_pairs() if p.label == 1]
    fallback = run_guard(registry, entry, settings, positives, "cycle held-out pairs")["guard"]
    assert (fallback["data"], fallback["pairs"]) == (str(guard_file), 300)
    assert read_export(registry.dir / "v1" / ONNX_DIR)["guard"] == fallback  # the last verdict is recorded


def test_ensure_export_guards_a_version_once(registry: Registry, settings: Settings, guard_file: Path) -> None:
    settings = settings.model_copy(update={"guard_pairs": guard_file})
    folder, meta = ensure_export(registry, registry.get("v1"), settings)
    assert meta["guard"]["data"] == str(guard_file) and read_export(folder) == meta
    again_folder, again = ensure_export(registry, registry.get("v1"), settings)
    assert again_folder == folder and again == meta  # same measurement: nothing exported or measured again


def test_guard_pairs_default_to_the_shipped_quora_dev_pairs(settings: Settings, guard_file: Path) -> None:
    shipped, name = guard_pairs(settings)
    assert name == "dev.jsonl.gz" and len(shipped) > 1000 and {p.label for p in shipped} == {0, 1}
    given, name = guard_pairs(settings.model_copy(update={"guard_pairs": guard_file}))
    assert name == str(guard_file) and len(given) == 300
