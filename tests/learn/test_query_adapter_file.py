"""Stand-alone query adapters: train on a pair file, provenance, evaluation next to the base, refusals."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from flywheel.errors import InvalidInput
from flywheel.lab.evaluate import evaluate_pairs_file
from flywheel.learn.query_adapter import AdapterConfig
from flywheel.learn.query_adapter_file import LABELLED_DEFAULTS, train_adapter_file
from flywheel.models.query_adapter import KIND, is_adapter_dir
from tests.helpers.factories import quora_pairs


def test_adapter_fits_real_pairs_and_records_provenance(tmp_path: Path, minilm_path: str) -> None:
    pairs = quora_pairs(tmp_path, 500)
    out = tmp_path / "adapter"
    config = replace(LABELLED_DEFAULTS, epochs=60, learning_rate=2e-3, seed=3)
    meta = train_adapter_file(pairs, out, minilm_path, config, symmetric=True, progress=False)

    assert is_adapter_dir(out) and sorted(p.name for p in out.iterdir()) == ["adapter.safetensors", "meta.json"]
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta and meta["kind"] == KIND and meta["base_model"] == minilm_path
    assert meta["data"]["n_pairs"] == 500 and meta["data"]["symmetric"] and len(meta["data"]["sha256"]) == 64
    assert meta["hyperparameters"]["epochs"] == 60 and meta["dimension"] == 384
    assert len(meta["loss_curve"]) == 60 and meta["loss_curve"][-1][1] < meta["loss_curve"][0][1]

    # Scored on the pairs it was trained on, the adapter must beat the bare base (it fitted them), and the
    # output carries the base's own numbers on the same split.
    result = evaluate_pairs_file(out, pairs, calibration_path=pairs)
    assert result["base"]["n"] == result["n"] == 500
    assert result["error_rate"] < result["base"]["error_rate"]
    assert result["delta_error"] == pytest.approx(result["error_rate"] - result["base"]["error_rate"], abs=0.02)
    assert result["delta_ci95"][1] < 0 and result["relative_error_reduction"] > 0


def test_refusals_leave_nothing_behind(tmp_path: Path, tiny_model_path: Path) -> None:
    pairs = quora_pairs(tmp_path, 40)
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="not empty"):
        train_adapter_file(pairs, taken, str(tiny_model_path), progress=False)
    assert [p.name for p in taken.iterdir()] == ["keep.txt"]

    positives = tmp_path / "positives.jsonl"
    rows = [("a b", "a c"), ("d e", "d f")]
    positives.write_text("".join(json.dumps({"query": q, "document": d, "label": 1}) + "\n" for q, d in rows))
    with pytest.raises(InvalidInput, match="needs both labels"):
        train_adapter_file(positives, tmp_path / "x", str(tiny_model_path), progress=False)
    with pytest.raises(InvalidInput, match="unknown adapter loss"):
        train_adapter_file(pairs, tmp_path / "y", str(tiny_model_path), AdapterConfig(loss="triplet"), progress=False)
    # Positives alone are enough for the ranking loss.
    train_adapter_file(positives, tmp_path / "z", str(tiny_model_path), AdapterConfig(loss="mnrl"), progress=False)
    assert is_adapter_dir(tmp_path / "z")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left behind"
    assert not is_adapter_dir(tiny_model_path)
