"""Breaking an exported int8 graph on purpose, so the accuracy guard has something to refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def break_int8(path: Path) -> None:
    """Corrupt a quantized graph: seeded noise for every int8 weight and 50x its dequantization scales."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    rng = np.random.default_rng(0)
    broken = 0
    for init in model.graph.initializer:
        weights = numpy_helper.to_array(init)
        if init.name.endswith("_quantized"):
            info = np.iinfo(weights.dtype)
            noise = rng.integers(info.min, info.max, weights.shape, endpoint=True).astype(weights.dtype)
            init.CopyFrom(numpy_helper.from_array(noise, init.name))
            broken += 1
        elif init.name.endswith("_scale"):
            init.CopyFrom(numpy_helper.from_array((weights * 50).astype(weights.dtype), init.name))
    assert broken, "no quantized weight found"
    onnx.save(model, str(path))
