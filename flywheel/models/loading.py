"""The one model loader: the packaged default's names, the torch device, and SentenceTransformer loading."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flywheel.errors import ModelLoadError
from flywheel.util.packaged import DEFAULT_MODEL_ALIASES, packaged_model_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def resolve_model(name_or_path: str | Path) -> str:
    """Map the default model's names to the packaged copy, so the default never needs the hub.

    Args:
        name_or_path: A model directory, a hub name, or an alias of all-MiniLM-L6-v2.

    Returns:
        What to pass to SentenceTransformer().
    """
    if str(name_or_path) in DEFAULT_MODEL_ALIASES:
        return packaged_model_path()
    return str(name_or_path)


def resolve_device(device: str | None = "auto") -> str | None:
    """Pick the torch device: CUDA when present for "auto", else what was asked (None: let torch choose)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def set_torch_threads(threads: int | None) -> int:
    """Set torch's intra-op threads for the process (None: leave them as they are).

    Returns:
        The count before, so a caller can put it back.
    """
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    return before


def load_model(name_or_path: str | Path, device: str | None = "auto") -> SentenceTransformer:
    """Load a SentenceTransformer in eval mode by folder, hub name or an alias of the packaged default.

    Args:
        name_or_path: e.g. "BAAI/bge-base-en-v1.5" (needs the hub or its cache), a folder, or "all-MiniLM-L6-v2".
        device: "auto", "cpu", "cuda", ...; None lets sentence-transformers choose.

    Returns:
        The loaded model.

    Raises:
        ModelLoadError: the model cannot be loaded; the message says which and why.
    """
    from sentence_transformers import SentenceTransformer

    try:
        model = SentenceTransformer(resolve_model(name_or_path), device=resolve_device(device))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load model {str(name_or_path)!r}: {exc}. "
            "Give a local folder, or a hub name with network access or a warm HF cache."
        ) from exc
    model.eval()
    return model
