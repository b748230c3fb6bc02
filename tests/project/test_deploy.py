"""deploy/: .env.example lists every setting with valid values, compose.yml and the Dockerfile have the API,
Qdrant, the data volume and health checks, and modal_train.py's CPU-side helpers work without modal."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.cycle.mining import MinedPairs, Pair, write_snapshot
from flywheel.cycle.split import is_heldout
from tests.helpers.paths import DEPLOY


def env_example() -> dict[str, str]:
    """FLYWHEEL_* names and values in .env.example, commented-out defaults included."""
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        body = line.removeprefix("# ").strip()
        if body.startswith("FLYWHEEL_") and "=" in body:
            name, _, value = body.partition("=")
            out[name] = value
    return out


def test_env_example_lists_every_setting_with_a_valid_value(monkeypatch: pytest.MonkeyPatch) -> None:
    listed = env_example()
    expected = {f"FLYWHEEL_{name.upper()}" for name in Settings.model_fields}
    assert sorted(expected - set(listed)) == [], "regenerate: python deploy/env_example.py > deploy/.env.example"
    assert sorted(set(listed) - expected) == [], "unknown settings in .env.example"
    for name, value in listed.items():
        if value:
            monkeypatch.setenv(name, value)
    settings = Settings()  # every value shown in the file is accepted
    assert settings.admin_keys == ["change-me-admin-key"] and settings.metrics_public is False


def test_compose_has_api_qdrant_volume_and_health_checks(tmp_path: Path) -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    api, qdrant = compose["services"]["api"], compose["services"]["qdrant"]
    assert api["environment"]["FLYWHEEL_QDRANT_URL"] == "http://qdrant:6333"
    assert "flywheel-data:/data" in api["volumes"] and api["environment"]["FLYWHEEL_DATA_DIR"] == "/data"
    assert "/livez" in " ".join(api["healthcheck"]["test"])
    assert "/readyz" in " ".join(qdrant["healthcheck"]["test"])
    assert api["depends_on"]["qdrant"]["condition"] == "service_healthy"
    assert "QDRANT__SERVICE__API_KEY" in qdrant["environment"]
    assert set(compose["volumes"]) == {"flywheel-data", "qdrant-storage"}
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert (
        'CMD ["flywheel", "serve"]' in dockerfile and "/livez" in dockerfile and "ARG TORCH_VARIANT=cpu" in dockerfile
    )
    # Where a compose implementation exists, it validates the file (with .env.example as the .env).
    tool = (
        ["docker", "compose"]
        if shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
        else ["docker-compose"]
        if shutil.which("docker-compose")
        else None
    )
    if tool is not None:
        copy = tmp_path / "deploy"
        shutil.copytree(DEPLOY, copy)
        shutil.copy(DEPLOY / ".env.example", copy / ".env")
        result = subprocess.run([*tool, "-f", str(copy / "compose.yml"), "config"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "FLYWHEEL_SEARCH_KEYS" in result.stdout


def _modal_train():
    spec = importlib.util.spec_from_file_location("modal_train", DEPLOY / "modal_train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_modal_train_helpers_without_modal(tmp_path: Path) -> None:
    mt = _modal_train()
    rows = [
        Pair(f"q{i}", f"query {i}", f"d{i}-{label}", f"doc {i} {label}", label, label, 1 - label, 1)
        for i in range(40)
        for label in (0, 1)
    ]
    snapshot = write_snapshot(MinedPairs(rows, None, datetime(2026, 1, 1)), tmp_path / "pairs.parquet")
    out = tmp_path / "train.jsonl"
    n = mt.export_training_pairs(snapshot, out, heldout_percent=20)
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    train_groups = {f"q{i}" for i in range(40) if not is_heldout(f"q{i}", 20)}
    assert n == len(exported) == 2 * len(train_groups) and 0 < len(train_groups) < 40
    assert {e["query"] for e in exported} == {f"query {g[1:]}" for g in train_groups}  # held-out stays home
    assert all(set(e) == {"query", "document", "label"} for e in exported)

    command = mt.train_command("p.jsonl", "out", "base-model", 1.0, 128, 30.0)
    help_text = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert all(flag in help_text for flag in command if flag.startswith("--"))

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "meta.json").write_text('{"device": "cuda"}')
    back = mt.unpack(mt.pack(folder), tmp_path / "back")
    assert json.loads((back / "meta.json").read_text()) == {"device": "cuda"}
