"""Loading models by packaged name or path, with an error that says what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from flywheel.errors import ConfigError
from flywheel.models.loading import load_model


def test_load_model_knows_the_packaged_names_and_says_what_to_fix(tmp_path: Path) -> None:
    model = load_model("all-MiniLM-L6-v2", device="cpu")  # the alias resolves to the packaged copy, offline
    assert model.get_embedding_dimension() == 384 and not model.training
    with pytest.raises(ConfigError, match=r"cannot load model .*nope.*Give a local folder"):
        load_model(str(tmp_path / "nope"), device="cpu")
