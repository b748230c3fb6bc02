"""Accuracy guard: an int8 encoder serves only if it stays close to its fp32 export on labelled pairs.

Two conditions, both measured on the cycle's held-out pairs (or, for a version exported outside a cycle,
on the labelled pairs in `guard_pairs`, by default the Quora dev pairs shipped in flywheel/data):
the pair error of int8 may exceed fp32's by at most `int8_max_error_increase`, and the mean cosine between
the int8 and fp32 vectors of the same texts must be at least `int8_min_cosine`. Otherwise every encoder of
that version falls back to ONNX fp32, and the cycle report and the logs say so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import load_labelled_pairs, pair_texts
from flywheel.models.export import export_version, write_export_meta
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import ModelVersion, Registry
from flywheel.scoring.pair_error import compare_pair_error
from flywheel.types import LabelledPair
from flywheel.util.files import now_iso
from flywheel.util.packaged import QUORA_DEV_PAIRS

if TYPE_CHECKING:
    from flywheel.config import Settings

log = logging.getLogger(__name__)

SHIPPED_PAIRS = QUORA_DEV_PAIRS


class _Cached:
    """Remembers each text's vector, so the pair error and the cosine check encode every text once."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.vectors: dict[str, np.ndarray] = {}

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        todo = [t for t in dict.fromkeys(sentences) if t not in self.vectors]
        if todo:
            self.vectors.update(zip(todo, self.model.encode(todo, batch_size=64), strict=True))
        return np.stack([self.vectors[t] for t in sentences])


def measure_guard(fp32: Any, int8: Any, pairs: list[LabelledPair], settings: Settings, data: str) -> dict[str, Any]:
    """Compare an int8 model with its fp32 original on labelled pairs; the verdict and every number.

    Args:
        fp32: the fp32 model (anything with SentenceTransformer's encode).
        int8: the quantized model.
        pairs: labelled pairs with both labels.
        settings: `int8_max_error_increase`, `int8_min_cosine`, `seed`.
        data: where the pairs came from, for the record.

    Returns:
        {"passed", "reason", thresholds (see `verdict`), "fp32_error", "int8_error", "error_increase",
        "delta_ci95", "mean_cosine", "min_cosine", "pairs", "n_test", "data", "measured_at"}.

    Raises:
        InvalidInput: the pairs cannot support a threshold fit (one class only, too few).
    """
    a, b = _Cached(fp32), _Cached(int8)
    compared = compare_pair_error(a, b, pairs, seed=settings.seed)
    texts = pair_texts(pairs)
    cosine = np.einsum("ij,ij->i", a.encode(texts), b.encode(texts))
    fp32_error = compared["incumbent"]["error_rate"]
    int8_error = compared["candidate"]["error_rate"]
    increase = int8_error - fp32_error
    mean_cosine = float(cosine.mean())
    measured = {
        "fp32_error": fp32_error,
        "int8_error": int8_error,
        "error_increase": increase,
        "delta_ci95": compared["delta_ci95"],
        "mean_cosine": mean_cosine,
        "min_cosine": float(cosine.min()),
        "pairs": len(pairs),
        "n_test": compared["n_test"],
        "data": data,
        "measured_at": now_iso(),
    }
    return {**verdict(measured, settings), **measured}


def verdict(guard: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Judge measured guard numbers against today's thresholds (so changing a threshold needs no re-measuring).

    Returns:
        {"passed", "reason", "max_error_increase", "min_mean_cosine"}.
    """
    tolerance, min_cosine = settings.int8_max_error_increase, settings.int8_min_cosine
    increase, mean_cosine = guard["error_increase"], guard["mean_cosine"]
    problems = []
    if increase > tolerance:
        problems.append(
            f"pair error {guard['int8_error'] * 100:.2f}% vs fp32 {guard['fp32_error'] * 100:.2f}% "
            f"({increase * 100:+.2f} pt > +{tolerance * 100:.2f} pt allowed)"
        )
    if mean_cosine < min_cosine:
        problems.append(f"mean cosine to fp32 {mean_cosine:.4f} < {min_cosine}")
    reason = "; ".join(problems) or (
        f"pair error {increase * 100:+.2f} pt vs fp32 (allowed +{tolerance * 100:.2f}), "
        f"mean cosine {mean_cosine:.4f} (needs {min_cosine})"
    )
    return {"passed": not problems, "reason": reason, "max_error_increase": tolerance, "min_mean_cosine": min_cosine}


def guard_pairs(settings: Settings) -> tuple[list[LabelledPair], str]:
    """The labelled pairs for a guard outside a cycle: `guard_pairs`, else the shipped Quora dev pairs."""
    path = settings.guard_pairs or SHIPPED_PAIRS
    return load_labelled_pairs(path), str(path.name if path == SHIPPED_PAIRS else path)


def run_guard(
    registry: Registry,
    entry: ModelVersion,
    settings: Settings,
    pairs: list[LabelledPair] | None = None,
    data: str = "",
) -> dict[str, Any]:
    """Export `entry` if needed, measure its int8 graph against fp32, and record the verdict in export.json.

    Args:
        registry: the model registry.
        entry: the version.
        settings: thresholds and seed.
        pairs: labelled pairs (the cycle's held-out pairs); None or unusable: the `guard_pairs` fallback.
        data: a name for `pairs` in the record.

    Returns:
        The export meta with its new "guard" entry.
    """
    folder, meta = export_version(registry, entry)
    fp32, int8 = OnnxModel(folder), OnnxModel(folder, int8=True)
    guard = None
    if pairs and {p.label for p in pairs} == {0, 1}:
        try:
            guard = measure_guard(fp32, int8, pairs, settings, data or "given pairs")
        except InvalidInput as exc:
            log.info("guard on %s not measurable (%s); using the fallback pairs", data, exc)
    if guard is None:
        fallback, name = guard_pairs(settings)
        guard = measure_guard(fp32, int8, fallback, settings, name)
    meta["guard"] = guard
    write_export_meta(folder, meta)
    verdict = "passed" if guard["passed"] else "refused"
    log.info("%s int8 accuracy guard %s: %s", entry.version, verdict, guard["reason"])
    return meta


def ensure_export(registry: Registry, entry: ModelVersion, settings: Settings) -> tuple[Path, dict[str, Any]]:
    """A version's export folder and meta, exporting and guarding it first when that was never done.

    Returns:
        (export folder, meta with a "guard" verdict).
    """
    folder, meta = export_version(registry, entry)
    if "guard" not in meta:
        meta = run_guard(registry, entry, settings)
    return folder, meta


__all__ = [
    "ensure_export",
    "guard_pairs",
    "measure_guard",
    "run_guard",
    "verdict",
]
