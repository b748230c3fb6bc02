"""Fixtures of the model tests."""

from __future__ import annotations

import pytest

from flywheel.models.registry import Registry
from flywheel.serve.service import Service


@pytest.fixture
def registry(service: Service) -> Registry:
    """The registry of an opened data dir (v1 = the tiny base model, loaded by path)."""
    return service.registry
