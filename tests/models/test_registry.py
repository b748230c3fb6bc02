"""The model registry: base version, allocation, promotion history, meta.json provenance."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flywheel.errors import NotFound
from flywheel.models.registry import ModelVersion, Registry
from flywheel.util.files import read_json


def test_empty_registry_has_no_incumbent(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="the registry has no incumbent yet"):
        Registry(tmp_path).incumbent()


def test_ensure_base_is_idempotent(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    first = reg.ensure_base("some/model", 384)
    second = reg.ensure_base("other/model", 128)
    assert first.version == second.version == "v1"
    assert second.base_model == "some/model" and second.dimension == 384
    meta = read_json(tmp_path / "v1" / "meta.json")
    assert meta["kind"] == "base" and meta["status"] == "incumbent" and meta["parent"] is None
    assert reg.get("v1").load_path == "some/model"


def test_promote_records_history_and_retires_previous(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.ensure_base("m", 8)
    version, folder = reg.allocate()
    assert version == "v2" and folder.is_dir()
    (folder / "meta.json").write_text('{"loss_curve": [[1, 0.5]]}')  # as training leaves it
    reg.save(ModelVersion(version, "finetune", "m", "now", 8, parent="v1"))
    assert reg.get("v2").load_path == str(folder)
    assert read_json(folder / "meta.json")["loss_curve"] == [[1, 0.5]]  # merged, not overwritten
    reg.promote("v2")
    assert reg.incumbent().version == "v2"
    assert reg.get("v1").status == "retired"
    assert [(h["version"], h["action"], h["previous"]) for h in reg.history()] == [
        ("v1", "initial", None),
        ("v2", "promoted", "v1"),
    ]
    assert [v.version for v in reg.versions()] == ["v1", "v2"]


def test_unknown_version_and_bad_names(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    for name in ("v9", "../etc", "latest"):
        with pytest.raises(NotFound, match=f"model version '{re.escape(name)}' does not exist"):
            reg.get(name)


def test_remove_refuses_incumbent(tmp_path: Path) -> None:
    reg = Registry(tmp_path)
    reg.ensure_base("m", 8)
    with pytest.raises(ValueError, match="refusing to delete the incumbent v1"):
        reg.remove("v1")
    assert (tmp_path / "v1" / "meta.json").is_file()
