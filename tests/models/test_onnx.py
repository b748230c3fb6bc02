"""OnnxModel: an exported encoder run by ONNX Runtime encodes what torch encodes, in order, without torch."""

from __future__ import annotations

import os
import subprocess
import sys

from flywheel.models.export import export_version
from flywheel.models.registry import Registry
from tests.helpers.paths import ROOT


def test_onnx_encoder_needs_neither_torch_nor_transformers(registry: Registry) -> None:
    folder, _ = export_version(registry, registry.get("v1"))
    code = (
        "import sys; from pathlib import Path; from flywheel.models.onnx import OnnxModel; "
        "v = OnnxModel(Path(sys.argv[1]), int8=True).encode(['hello there', 'x']); "
        "heavy = sorted({'torch', 'transformers', 'sentence_transformers'} & set(sys.modules)); "
        "print(v.shape, heavy)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(2, 32) []"
