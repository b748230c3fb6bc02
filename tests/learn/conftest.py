"""Fixtures of the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def tiny(tiny_model_path: Path) -> str:
    """The tiny random BERT's folder as the base-model string training takes."""
    return str(tiny_model_path)
