"""Encoders: which backends' vectors may share a collection."""

from __future__ import annotations

from flywheel.models.encoder import compatible


def test_only_vectors_of_the_same_precision_are_compatible() -> None:
    assert compatible(None, "onnx") and compatible("torch", "onnx") and compatible("onnx-int8", "onnx-int8")
    assert not compatible("onnx", "onnx-int8") and not compatible(None, "onnx-int8")
