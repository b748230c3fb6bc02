"""The docs stay true: the configuration page lists every setting, the README stays short and links resolve."""

from __future__ import annotations

import re
import sys

from flywheel.config import Settings
from tests.helpers.paths import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import config_docs  # noqa: E402


def test_configuration_doc_is_generated_from_settings() -> None:
    """Regenerate with `python scripts/config_docs.py > docs/configuration.md` after adding a setting."""
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert page == config_docs.render()
    for name, field in Settings.model_fields.items():
        assert f"`FLYWHEEL_{name.upper()}`" in page
        assert field.description, f"setting {name} has no description"


def test_readme_is_short_and_every_relative_link_resolves() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode()) <= 12 * 1024
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in pages:
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    linked = set(re.findall(r"\]\(docs/([\w.-]+\.md)", readme))
    assert {p.name for p in (ROOT / "docs").glob("*.md")} <= linked


def test_docs_speak_of_the_product_only() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        text = page.read_text(encoding="utf-8")
        for phrase in (r"(?i)\bissue \d", "Done means", "this project.s machine"):
            assert not re.search(phrase, text), f"{page.name}: {phrase}"
