"""Where the repository's parts are, wherever a test file sits in tests/."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository (tests/helpers/paths.py -> ../..)
PACKAGE = ROOT / "flywheel"
DEPLOY = ROOT / "deploy"
