"""The int8 accuracy guard: it passes a faithful int8 graph, refuses a broken one, and records its verdict."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flywheel.config import Settings
from flywheel.models.encoder import load_encoder
from flywheel.models.export import FILES, read_export
from flywheel.models.guard import ensure_export, run_guard, verdict
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import Registry
from tests.helpers.factories import PARITY_TEXTS
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
