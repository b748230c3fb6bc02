"""The CLI: help texts, ingest and stats on a data dir, exit codes with one readable line."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app, check_bind
from flywheel.config import Settings
from flywheel.errors import ConfigError
from tests.conftest import CORPUS

runner = CliRunner()


@pytest.mark.parametrize("command", [[], ["serve"], ["ingest"], ["stats"]])
def test_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_ingest_then_stats(tmp_path: Path, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_BASE_MODEL", str(tiny_model_path))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"id": "{i}", "text": "{t}"}}\n' for i, t in CORPUS))
    data = tmp_path / "data"
    result = runner.invoke(app, ["ingest", str(corpus), "--data-dir", str(data), "--batch-size", "3"])
    assert result.exit_code == 0, result.output
    assert f"upserted {len(CORPUS)} documents" in result.output
    stats = runner.invoke(app, ["stats", "--data-dir", str(data)])
    assert stats.exit_code == 0
    assert "documents" in stats.output and f"│ {len(CORPUS)} " in stats.output


def test_ingest_bad_file_exits_2_and_writes_nothing(tmp_path: Path, tiny_model_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FLYWHEEL_BASE_MODEL", str(tiny_model_path))
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "a", "text": "fine"}\n{"id": "b"}\n')
    data = tmp_path / "data"
    result = runner.invoke(app, ["ingest", str(corpus), "--data-dir", str(data)])
    assert result.exit_code == 2
    assert "c.jsonl:2" in result.output and "Traceback" not in result.output
    assert not (data / "flywheel.duckdb").exists()


def test_bad_config_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["stats", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert "config file not found" in result.output


def test_refuses_public_bind_without_keys() -> None:
    with pytest.raises(ConfigError, match="without API keys"):
        check_bind(Settings(host="0.0.0.0"))
    check_bind(Settings(host="0.0.0.0", admin_keys=["a"]))
    check_bind(Settings(host="127.0.0.1"))
    check_bind(Settings(host="::1"))
    result = runner.invoke(app, ["serve", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "FLYWHEEL_ADMIN_KEYS" in result.output
