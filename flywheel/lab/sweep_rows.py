"""The sweep's results file: its columns, its training modes, reading and writing rows, parsing grid options."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flywheel.errors import InvalidInput

MODES = ("full", "frozen-dense", "query-adapter")
# "adapter" was the frozen-base Dense mode's first name; old CSVs and scripts still say it.
MODE_ALIASES = {"adapter": "frozen-dense"}
COLUMNS = (
    "cell_id", "model", "mode", "dim", "embedding_dim", "size", "n_train", "n_calibration", "n_test",
    "error_rate", "ci_low", "ci_high", "base_error_rate", "delta_vs_base", "delta_ci_low", "delta_ci_high",
    "relative_reduction", "roc_auc", "train_seconds", "steps", "stop_reason", "epochs", "batch_size", "loss",
    "learning_rate", "seed", "train_file", "eval_file", "data_key", "finished_at",
)  # fmt: skip


def canonical_mode(mode: str) -> str:
    """A mode's current name (old names are accepted)."""
    return MODE_ALIASES.get(mode, mode)


def read_rows(path: Path) -> list[dict[str, str]]:
    """Rows of an existing sweep CSV (empty when the file does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is not None and list(reader.fieldnames) != list(COLUMNS):
            raise InvalidInput(f"{path} is not a sweep CSV of this version (other columns); choose another --out")
        return [{**row, "mode": canonical_mode(row.get("mode", ""))} for row in reader]


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write all rows so that readers see the old file or the new one, never half of one (tmp + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def parse_dims(values: Sequence[str]) -> list[int | None]:
    """Parse CLI dims: integers or "full" (the model's own size), comma-separated or repeated.

    Args:
        values: E.g. ["full,256"] or ["full", "128"].

    Returns:
        The dims, None meaning full.
    """
    out: list[int | None] = []
    for part in (p.strip() for v in values for p in v.split(",") if p.strip()):
        if part.lower() == "full":
            out.append(None)
        elif part.isdigit():
            out.append(int(part))
        else:
            raise InvalidInput(f"bad dim {part!r}: use an integer such as 256, or 'full'")
    return out


def parse_ints(values: Sequence[str], what: str) -> list[int]:
    """Parse comma-separated or repeated integers (CLI sizes)."""
    parts = [p.strip() for v in values for p in v.split(",") if p.strip()]
    if bad := [p for p in parts if not p.isdigit()]:
        raise InvalidInput(f"bad {what} {bad[0]!r}: use whole numbers such as 100,1000")
    return [int(p) for p in parts]
