"""`flywheel evaluate`: score a model or a query-adapter folder on a labelled pair file, next to its base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import load_labelled_pairs, pair_texts
from flywheel.learn.query_adapter_file import encode_texts
from flywheel.models.loading import load_model
from flywheel.models.query_adapter import META_FILE, QueryAdapter, is_adapter_dir
from flywheel.scoring.pair_error import calibration_and_test, comparison, pair_error, scored_pairs
from flywheel.types import LabelledPair
from flywheel.util.files import read_json


def evaluate_pairs_file(
    model_name_or_path: str | Path,
    pairs_path: str | Path,
    calibration_path: str | Path | None = None,
    seed: int = 0,
    n_boot: int = 1000,
) -> dict[str, Any]:
    """Pair error of one model on a labelled-pair file (behind `flywheel evaluate`).

    Args:
        model_name_or_path: Model directory, hub name, or alias of the packaged default.
        pairs_path: Labelled pairs (JSONL(.gz) or Quora TSV/CSV).
        calibration_path: Pairs to fit the threshold on; without it the file is split in half by query.
        seed: Seed of the split and the bootstrap.
        n_boot: Bootstrap resamples.

    Returns:
        {"error_rate", "ci95": [lo, hi], "roc_auc", "n", "threshold", "n_calibration", "positive_rate",
        "model", "pairs", "calibration"}; for a query-adapter folder (`flywheel train --query-adapter`) also
        "base" (the bare base model on the same split), "delta_error", "delta_ci95", "relative_error_reduction".
    """
    pairs = load_labelled_pairs(pairs_path)
    if not pairs:
        raise InvalidInput(f"{pairs_path}: no labelled pairs")
    calibration = load_labelled_pairs(calibration_path) if calibration_path is not None else None
    cal_pairs, test_pairs = calibration_and_test(pairs, calibration, 0.5, seed)
    if is_adapter_dir(model_name_or_path):
        out = evaluate_adapter_dir(model_name_or_path, cal_pairs, test_pairs, n_boot, seed)
    else:
        model = load_model(model_name_or_path)
        out = pair_error(*scored_pairs(model, cal_pairs), *scored_pairs(model, test_pairs), n_boot, seed).to_dict()
    out.update(
        model=str(model_name_or_path),
        pairs=str(pairs_path),
        calibration=str(calibration_path) if calibration_path is not None else "split of pairs by query",
    )
    return out


def evaluate_adapter_dir(
    folder: str | Path,
    calibration: list[LabelledPair],
    test: list[LabelledPair],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Pair error of a saved adapter (adapted queries vs base documents) next to its bare base on the same split.

    Args:
        folder: A folder written by `train_adapter_file`.
        calibration: Pairs the thresholds are fitted on.
        test: Pairs the error is measured on.
        n_boot: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        The adapter's pair error (the keys of `PairErrorResult.to_dict`) plus "base" (the bare base model's),
        "delta_error", "delta_ci95" (paired bootstrap) and "relative_error_reduction".
    """
    folder = Path(folder)
    meta = read_json(folder / META_FILE)
    adapter = QueryAdapter.load(folder, folder.name, meta["base_model"])
    model = load_model(meta["base_model"])
    texts = pair_texts([*calibration, *test])
    vectors = encode_texts(model, texts, progress=False)
    row = {text: i for i, text in enumerate(texts)}

    def scored(pairs: list[LabelledPair], adapted: bool) -> tuple[np.ndarray, np.ndarray]:
        q = vectors[[row[p.query] for p in pairs]]
        d = vectors[[row[p.document] for p in pairs]]
        q = adapter.apply(q) if adapted else q
        return (q * d).sum(1), np.array([p.label for p in pairs], dtype=int)

    base, cand = (
        pair_error(*scored(calibration, adapted), *scored(test, adapted), n_boot, seed) for adapted in (False, True)
    )
    compared = comparison(base, cand, len(test), len(calibration), n_boot, seed)
    return {
        **compared["candidate"],
        "base": compared["incumbent"],
        "base_model": meta["base_model"],
        **{k: compared[k] for k in ("delta_error", "delta_ci95", "relative_error_reduction")},
    }
