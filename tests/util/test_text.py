"""The query key that mining groups by and exploration counts repeats by."""

from __future__ import annotations

from flywheel.util.text import normalise_query


def test_normalise_query() -> None:
    assert normalise_query("  How do I   learn PYTHON?? ") == "how do i learn python"
    assert normalise_query("Ｐｙｔｈｏｎ？") == "python"  # NFKC folds full-width forms
    assert normalise_query("Где купить чай?") == "где купить чай"  # non-Latin text keeps its letters
