"""Query text normalisation: one key for questions that differ only in case, width, spacing or punctuation."""

from __future__ import annotations

import re
import unicodedata

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)


def normalise_query(text: str) -> str:
    """The grouping key of a query: NFKC, case-folded, punctuation and runs of spaces collapsed."""
    return _PUNCT.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()
