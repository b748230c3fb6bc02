"""Settings: env prefix, comma-separated keys, TOML/YAML files, precedence, derived paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.config import Settings
from flywheel.errors import ConfigError
from flywheel.util.packaged import packaged_model_path


def test_defaults() -> None:
    s = Settings()
    assert s.data_dir == Path("flywheel-data")
    assert s.db_file == Path("flywheel-data/flywheel.duckdb")
    assert s.qdrant_dir == Path("flywheel-data/qdrant")
    assert s.collection_alias == "documents"
    assert s.base_model == packaged_model_path() and Path(s.base_model, "modules.json").exists()
    assert (s.host, s.port, s.auth_enabled) == ("127.0.0.1", 8000, False)


def test_env_and_comma_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLYWHEEL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLYWHEEL_ADMIN_KEYS", "old, new")
    monkeypatch.setenv("FLYWHEEL_SEARCH_KEYS", "s1")
    monkeypatch.setenv("FLYWHEEL_PORT", "9001")
    s = Settings.load()
    assert s.admin_keys == ["old", "new"] and s.search_keys == ["s1"] and s.auth_enabled
    assert s.port == 9001 and s.db_file == tmp_path / "flywheel.duckdb"


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_file_values_and_env_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cfg{suffix}"
    if suffix == ".toml":
        path.write_text('port = 7000\ncollection_alias = "faq"\nmax_k = 50\n')
    else:
        path.write_text("port: 7000\ncollection_alias: faq\nmax_k: 50\n")
    monkeypatch.setenv("FLYWHEEL_PORT", "7100")
    s = Settings.load(path, max_k=20)
    assert s.collection_alias == "faq"  # from the file
    assert s.port == 7100  # env wins over the file
    assert s.max_k == 20  # explicit override wins over everything


def test_bad_files_and_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        Settings.load(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("port: not-a-number\n")
    with pytest.raises(ConfigError, match="port"):
        Settings.load(wrong)
    with pytest.raises(ConfigError, match="cycle_cron"):
        Settings.load(cycle_cron="every tuesday")
    with pytest.raises(ConfigError, match="default_k"):
        Settings.load(default_k=500, max_k=100)


def test_the_old_name_of_the_frozen_dense_option_still_works(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().train_frozen_dense is False
    monkeypatch.setenv("FLYWHEEL_TRAIN_ADAPTER", "true")
    assert Settings().train_frozen_dense is True


def test_backend_settings() -> None:
    assert Settings(encoder_backend="onnx-int8").bulk_backend == "onnx-int8"
    assert Settings(encoder_backend="torch", bulk_encoder_backend="onnx").bulk_backend == "onnx"
    with pytest.raises(ConfigError, match="same precision"):
        Settings.load(encoder_backend="onnx-int8", bulk_encoder_backend="torch")
    with pytest.raises(ConfigError, match="encoder_backend"):
        Settings.load(encoder_backend="tensorrt")
