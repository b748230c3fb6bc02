"""The lab commands: `train` (a model or a query adapter) and `evaluate`, their option checks and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from tests.helpers.factories import quora_pairs

runner = CliRunner()


def test_cli_train_query_adapter_then_evaluate(tmp_path: Path, tiny_model_path: Path) -> None:
    pairs = quora_pairs(tmp_path, 60)
    out = tmp_path / "qa"
    args = ["train", "--pairs", str(pairs), "--out", str(out), "--base", str(tiny_model_path), "--query-adapter"]
    trained = runner.invoke(app, [*args, "--symmetric", "--epochs", "3", "--batch-size", "16"])
    assert trained.exit_code == 0, trained.output
    assert "query adapter" in trained.output and "60 pairs" in trained.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["hyperparameters"]["epochs"] == 3 and meta["hyperparameters"]["batch_size"] == 16

    evaluated = runner.invoke(app, ["evaluate", "--model", str(out), "--pairs", str(pairs)])
    assert evaluated.exit_code == 0, evaluated.output
    metrics = json.loads(evaluated.stdout)
    assert {"error_rate", "ci95", "base", "delta_error", "delta_ci95"} <= metrics.keys()
    assert metrics["base_model"] == str(tiny_model_path)

    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "not empty" in again.output
    other = [*args[:4], str(tmp_path / "other"), *args[5:]]
    bad_loss = runner.invoke(app, [*other, "--loss", "nope"])
    assert bad_loss.exit_code == 2 and "unknown adapter loss" in bad_loss.output
    mixed = runner.invoke(app, [*other, "--dim", "128", "--max-steps", "5"])
    assert mixed.exit_code == 2 and "--dim, --max-steps do(es) not apply to --query-adapter" in mixed.output
    fractional = runner.invoke(app, [*other, "--epochs", "2.5"])
    assert fractional.exit_code == 2 and "whole number of --epochs" in fractional.output
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_train_and_evaluate_commands(tmp_path: Path, tiny_model_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        ("how do i learn python", "learn python programming", 1),
        ("how do i learn python", "cook rice in a pot", 0),
        ("best laptop for code", "good laptop for programming", 1),
        ("best laptop for code", "the capital of france", 0),
        ("lose weight fast", "healthy ways to lose weight", 1),
        ("lose weight fast", "why is the sky blue", 0),
    ] * 4
    pairs.write_text("".join(f'{{"question1": "{a}", "question2": "{b}", "is_duplicate": {c}}}\n' for a, b, c in rows))
    out = tmp_path / "model"
    result = runner.invoke(
        app, ["train", "--pairs", str(pairs), "--out", str(out), "--base", str(tiny_model_path), "--max-steps", "2"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "meta.json").exists() and "2 steps" in result.output
    evaluated = runner.invoke(app, ["evaluate", "--model", str(out), "--pairs", str(pairs)])
    assert evaluated.exit_code == 0, evaluated.output
    import json

    metrics = json.loads(evaluated.stdout)
    assert 0 <= metrics["error_rate"] <= 1 and metrics["n"] > 0 and len(metrics["ci95"]) == 2
    missing = runner.invoke(app, ["evaluate", "--model", str(out), "--pairs", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
