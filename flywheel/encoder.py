"""Encoders: a model version loaded for turning text into normalised vectors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flywheel.errors import ConfigError


def resolve_device(device: str = "auto") -> str:
    """Pick the torch device: CUDA when present for "auto", else what was asked."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str, device: str = "auto"):  # -> SentenceTransformer (import is slow)
    """Load a sentence-transformers model by hub name or local path.

    Args:
        name_or_path: e.g. "BAAI/bge-base-en-v1.5" (needs the hub or its cache) or a folder.
        device: "auto", "cpu", "cuda", ...

    Returns:
        The SentenceTransformer in eval mode.

    Raises:
        ConfigError: the model cannot be loaded; the message says which and why.
    """
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(name_or_path, device=resolve_device(device))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load model {name_or_path!r}: {exc}. Give a local folder, or a hub name with network "
            "access or a warm HF cache."
        ) from exc
    model.eval()
    return model


@dataclass
class Encoder:
    """One model version ready to encode; immutable once built, so it can be swapped as a whole."""

    version: str
    model: object  # SentenceTransformer
    batch_size: int = 64

    @property
    def dimension(self) -> int:
        """Output dimension (after any truncation)."""
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode texts to L2-normalised float32 vectors (cosine = dot product).

        Args:
            texts: the texts.
            progress: show a progress bar (bulk work).

        Returns:
            An array of shape (len(texts), dimension).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)
