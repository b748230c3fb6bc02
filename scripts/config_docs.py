"""Write docs/configuration.md from the Settings class, so every setting is documented with its default.

    python scripts/config_docs.py > docs/configuration.md

tests/project/test_docs.py fails when the file differs from what this prints (regenerate it after adding a setting).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flywheel.config import Settings  # noqa: E402

HEADER = """\
# Configuration

One `Settings` class (pydantic-settings) holds every knob. Sources, highest first: CLI flags, `FLYWHEEL_*`
environment variables, a TOML or YAML file given with `--config` (the same field names, optionally under a
`[flywheel]` table). An unknown key or a value that fails validation is a one-line error naming the field.
Lists (API keys) are comma-separated, so keys rotate by listing old and new. `deploy/.env.example` lists the
same settings as an environment file.

This page is generated from `flywheel/config.py` by `python scripts/config_docs.py > docs/configuration.md`;
a test fails when a setting is missing here.

| env | default | what it does |
|---|---|---|
"""


def _default(name: str, field: Any) -> str:
    if name == "base_model":
        return "packaged all-MiniLM-L6-v2"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):  # the "key:value,key:value" form the environment takes
        return ",".join(f"{k}:{v}" for k, v in value.items()) or "empty"
    if isinstance(value, list):
        return ",".join(map(str, value)) or "empty"
    if hasattr(value, "get_secret_value"):
        return "unset"
    return str(value)


def render() -> str:
    """The whole page."""
    rows = []
    for name, field in Settings.model_fields.items():
        text = (field.description or "").replace("|", "\\|")
        rows.append(f"| `FLYWHEEL_{name.upper()}` | `{_default(name, field)}` | {text} |")
    return HEADER + "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
