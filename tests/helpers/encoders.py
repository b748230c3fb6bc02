"""A table-driven encoder, so rankings and pair errors can be computed by hand."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class TableEncoder:
    """An encoder whose embeddings are a fixed text -> vector table."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        """Keep the table and count encoded texts."""
        self.table = {text: np.asarray(vec, dtype=np.float32) for text, vec in table.items()}
        self.encoded: list[str] = []

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        """Look texts up (normalised when asked, like SentenceTransformer.encode)."""
        self.encoded.extend(sentences)
        out = np.stack([self.table[s] for s in sentences])
        if kwargs.get("normalize_embeddings"):
            out = out / np.linalg.norm(out, axis=1, keepdims=True)
        return out


def angle(deg: float) -> list[float]:
    """A unit 2-d vector at `deg` degrees."""
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]
