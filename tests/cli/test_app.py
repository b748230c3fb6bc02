"""The typer app: help texts, and flywheel errors as one readable line and an exit code."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["serve"], ["ingest"], ["stats"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "config file not found" in result.output
