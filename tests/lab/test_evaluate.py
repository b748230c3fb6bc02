"""`evaluate_pairs_file`: a model folder scored on a pair file, split itself or on a given calibration file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flywheel.errors import InvalidInput
from flywheel.lab.evaluate import evaluate_pairs_file


def test_evaluate_pairs_file_with_and_without_calibration(tmp_path: Path, tiny_model_path: Path) -> None:
    """The CLI's function splits the file itself, or tests on all of it when a calibration file is given."""
    model_dir = tiny_model_path
    rows = [
        {
            "query": f"how to cook pasta {i}",
            "document": f"pasta recipe {i}" if i % 2 else f"buy a car {i}",
            "label": i % 2,
        }
        for i in range(40)
    ]
    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = evaluate_pairs_file(str(model_dir), pairs_file, seed=0)
    assert {"error_rate", "ci95", "roc_auc", "n", "threshold"} <= set(split)
    assert split["n"] + split["n_calibration"] == 40 and split["n"] < 40
    assert split["ci95"][0] <= split["error_rate"] <= split["ci95"][1]
    calibrated = evaluate_pairs_file(str(model_dir), pairs_file, calibration_path=pairs_file)
    assert calibrated["n"] == 40 and calibrated["n_calibration"] == 40
    with pytest.raises(InvalidInput, match="cannot load model"):
        evaluate_pairs_file(str(tmp_path / "no-model"), pairs_file)
