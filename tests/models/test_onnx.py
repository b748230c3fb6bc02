"""OnnxModel: an exported encoder run by ONNX Runtime encodes what torch encodes, in order, without torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flywheel.models.export import FILES, export_model, export_version
from flywheel.models.loading import load_model
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import Registry
from tests.helpers.factories import PARITY_TEXTS
from tests.helpers.paths import ROOT

# Lengths that differ and are not in order, so length-sorted batches must be put back in place.
MIXED = ["x", "the best pasta recipe for dinner with rice and bread", "good guitar tips", "a", "why is the sky blue"]


@pytest.fixture(scope="module")
def folder(tiny_model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model exported once for this module (fp32 + int8 graphs and the tokenizer)."""
    out = tmp_path_factory.mktemp("export") / "onnx"
    export_model(str(tiny_model_path), out, {"version": "v1", "kind": "base"})
    return out


def test_fp32_graph_encodes_what_torch_encodes(folder: Path, tiny_model_path: Path) -> None:
    reference = load_model(str(tiny_model_path), "cpu").encode(PARITY_TEXTS + MIXED, normalize_embeddings=True)
    model = OnnxModel(folder)
    vectors = model.encode(PARITY_TEXTS + MIXED)
    assert model.get_embedding_dimension() == 32 and model.file == folder / FILES["fp32"]
    assert vectors.dtype == np.float32 and vectors.shape == (len(PARITY_TEXTS + MIXED), 32)
    np.testing.assert_allclose(vectors, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("int8", [False, True])
def test_batches_sorted_by_length_come_back_in_input_order(folder: Path, int8: bool) -> None:
    model = OnnxModel(folder, int8=int8)
    one_by_one = np.concatenate([model.encode([text]) for text in MIXED])
    # Dynamic int8 quantizes activations per batch, so batch-mates move an int8 vector by ~1e-4.
    atol = 1e-3 if int8 else 1e-5
    for batched in (model.encode(MIXED, batch_size=2), model.encode(MIXED, batch_size=64, show_progress_bar=True)):
        np.testing.assert_allclose(batched, one_by_one, atol=atol)
        assert (np.argmax(batched @ one_by_one.T, axis=1) == np.arange(len(MIXED))).all()
    np.testing.assert_allclose(model.encode(MIXED[2]), one_by_one[2:3], atol=1e-6)  # a bare string is one text
    assert model.encode([]).shape == (0, 32)


def test_int8_graph_stays_close_to_fp32_and_threads_do_not_change_the_answer(folder: Path) -> None:
    fp32, int8 = OnnxModel(folder).encode(PARITY_TEXTS), OnnxModel(folder, int8=True)
    assert int8.file == folder / FILES["int8"]
    vectors = int8.encode(PARITY_TEXTS)
    assert np.einsum("ij,ij->i", vectors, fp32).min() > 0.99 and not np.array_equal(vectors, fp32)
    single = OnnxModel(folder, threads=1)
    assert single.session.get_session_options().intra_op_num_threads == 1
    np.testing.assert_allclose(single.encode(PARITY_TEXTS), fp32, atol=1e-6)


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
