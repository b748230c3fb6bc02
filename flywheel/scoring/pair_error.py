"""Pair-classification error and retrieval metrics for embedding models, with (paired) bootstrap CIs."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import pair_texts
from flywheel.types import LabelledPair

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    pass

# Bootstrap index matrices are built in chunks of at most this many cells to bound memory (~80 MB).
_MAX_BOOT_CELLS = 10_000_000


class Encoder(Protocol):
    """Anything that embeds texts like SentenceTransformer.encode (the evaluation needs nothing else)."""

    def encode(self, sentences: list[str], **kwargs: Any) -> Any:
        """Embed texts."""
        ...


@dataclass
class PairErrorResult:
    """Error of a threshold (a 1-feature logistic regression on cosine) on held-out labelled pairs."""

    error_rate: float
    ci95: tuple[float, float]
    roc_auc: float
    n: int
    threshold: float
    n_calibration: int
    positive_rate: float
    # Per-test-pair 0/1 mistakes, kept for paired comparisons; not part of to_dict().
    errors: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes None, the CI a list)."""
        out = {key: val for key, val in asdict(self).items() if key != "errors"}
        out["ci95"] = [float(self.ci95[0]), float(self.ci95[1])]
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}


def encode_normalized(model: Encoder, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """Embed texts as unit-length float32 rows (re-normalised, since not every encoder honours the flag).

    Args:
        model: The encoder.
        texts: Texts to embed.
        batch_size: Encoding batch size.

    Returns:
        An array of shape (len(texts), dim).
    """
    emb = model.encode(list(texts), normalize_embeddings=True, batch_size=batch_size, convert_to_numpy=True)
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)


def cosine_scores(model: Encoder, pairs: Sequence[LabelledPair], batch_size: int = 64) -> np.ndarray:
    """Cosine similarity of each pair, embedding every distinct text once.

    Args:
        model: The encoder.
        pairs: Labelled pairs (only the texts are used).
        batch_size: Encoding batch size.

    Returns:
        A float array aligned with `pairs`.
    """
    texts = pair_texts(pairs)
    if not texts:
        return np.zeros(0, dtype=np.float32)
    emb = encode_normalized(model, texts, batch_size)
    row = {text: i for i, text in enumerate(texts)}
    q = emb[[row[p.query] for p in pairs]]
    d = emb[[row[p.document] for p in pairs]]
    return np.einsum("ij,ij->i", q, d)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of b - a with a 95% percentile CI from resampling the same items for both.

    Resampling the differences keeps the per-item correlation between a and b, which makes the CI
    much narrower than comparing two independent CIs when both systems find the same items hard.

    Args:
        a: Per-item values of the baseline (e.g. 0/1 errors, per-query MRR).
        b: Per-item values of the challenger, aligned with `a`.
        n_boot: Number of bootstrap resamples.
        seed: RNG seed.

    Returns:
        (mean(b - a), lo, hi).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InvalidInput(f"paired_bootstrap needs aligned arrays, got shapes {a.shape} and {b.shape}")
    return _bootstrap(b - a, n_boot, seed)


def _bootstrap(values: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """(mean, lo, hi): a 95% percentile bootstrap CI of the mean, vectorised in memory-bounded chunks."""
    values = np.asarray(values, dtype=np.float64).ravel()
    n = values.size
    if n == 0:
        raise InvalidInput("cannot bootstrap an empty sample")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, _MAX_BOOT_CELLS // n)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        means[start : start + size] = values[rng.integers(0, n, size=(size, n))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(values.mean()), float(lo), float(hi)


def split_calibration(
    pairs: Sequence[LabelledPair], fraction: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split pairs into calibration and test indices, keeping all pairs of one query on the same side.

    Grouping by query (case- and space-insensitive) stops the threshold from being fitted on the very
    questions it is tested on. Groups are ordered by a seeded sha1, so the split is the same in every
    process and for every model.

    Args:
        pairs: The labelled pairs.
        fraction: Target share of pairs in the calibration part.
        seed: Changes which groups land where.

    Returns:
        (calibration indices, test indices), each sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise InvalidInput(f"calibration fraction must be between 0 and 1, got {fraction}")
    groups: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        groups.setdefault(" ".join(pair.query.casefold().split()), []).append(i)
    order = sorted(groups, key=lambda key: hashlib.sha1(f"{seed}:{key}".encode()).hexdigest())
    target = fraction * len(pairs)
    calibration: list[int] = []
    test: list[int] = []
    for key in order:
        (calibration if len(calibration) < target else test).extend(groups[key])
    if not calibration or not test:
        raise InvalidInput(f"cannot split {len(pairs)} pairs of {len(groups)} distinct queries in two parts")
    return np.array(sorted(calibration), dtype=np.int64), np.array(sorted(test), dtype=np.int64)


def pair_error(
    scores_cal: np.ndarray,
    labels_cal: np.ndarray,
    scores_test: np.ndarray,
    labels_test: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
) -> PairErrorResult:
    """The seed's metric: 1 - accuracy of a logistic regression on cosine, fitted on calibration pairs.

    Args:
        scores_cal: Cosine scores of the calibration pairs.
        labels_cal: Their 0/1 labels (both classes must occur).
        scores_test: Cosine scores of the test pairs.
        labels_test: Their 0/1 labels.
        n_boot: Bootstrap resamples over test pairs for the CI.
        seed: Bootstrap seed.

    Returns:
        Error rate with 95% CI, ROC AUC of the raw scores, test size and the fitted threshold.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    labels_cal = np.asarray(labels_cal).astype(int)
    labels_test = np.asarray(labels_test).astype(int)
    scores_test = np.asarray(scores_test, dtype=np.float64)
    if np.unique(labels_cal).size < 2:
        raise InvalidInput(
            f"the calibration pairs have only one class (label {np.unique(labels_cal).tolist()}); "
            "a threshold needs both duplicates (1) and non-duplicates (0)"
        )
    if scores_test.size == 0:
        raise InvalidInput("no test pairs to evaluate")
    # Standardise first: cosines of a fine-tuned model can sit in a narrow band (say 0.90-0.99), where the
    # default L2 penalty would flatten the slope and leave every pair on the majority side.
    scores_cal = np.asarray(scores_cal, dtype=np.float64)
    mean, std = float(scores_cal.mean()), float(scores_cal.std()) or 1.0
    clf = LogisticRegression().fit(((scores_cal - mean) / std).reshape(-1, 1), labels_cal)
    errors = (clf.predict(((scores_test - mean) / std).reshape(-1, 1)) != labels_test).astype(np.float64)
    error_rate, lo, hi = _bootstrap(errors, n_boot, seed)
    coef = float(clf.coef_[0][0])
    both = np.unique(labels_test).size == 2
    return PairErrorResult(
        error_rate=error_rate,
        ci95=(lo, hi),
        roc_auc=float(roc_auc_score(labels_test, scores_test)) if both else math.nan,
        n=int(scores_test.size),
        # The cosine where the fitted model crosses p = 0.5.
        threshold=float(mean - clf.intercept_[0] * std / coef) if coef else math.nan,
        n_calibration=int(labels_cal.size),
        positive_rate=float(labels_test.mean()),
        errors=errors,
    )


def compare_pair_error(
    incumbent: Encoder,
    candidate: Encoder,
    pairs: Sequence[LabelledPair],
    calibration_fraction: float = 0.5,
    n_boot: int = 1000,
    seed: int = 0,
    calibration: Sequence[LabelledPair] | None = None,
) -> dict[str, Any]:
    """Pair error of two models on the same split, with a paired-bootstrap CI of the difference.

    Each model gets its own threshold from the same calibration pairs; the bootstrap then resamples the
    same test pairs for both models (the thresholds are not refitted per resample).

    Args:
        incumbent: The serving model.
        candidate: The challenger.
        pairs: Labelled pairs; split with `split_calibration` unless `calibration` is given.
        calibration_fraction: Share of `pairs` used to fit the thresholds.
        n_boot: Bootstrap resamples.
        seed: Seed of the split and of the bootstrap.
        calibration: Separate calibration pairs; then every pair in `pairs` is a test pair.

    Returns:
        {"incumbent": {...}, "candidate": {...}, "delta_error": cand - inc, "delta_ci95": [lo, hi],
        "relative_error_reduction": (inc - cand) / inc, "n_test", "n_calibration"}.
    """
    cal_pairs, test_pairs = calibration_and_test(pairs, calibration, calibration_fraction, seed)
    inc, cand = (
        pair_error(*scored_pairs(model, cal_pairs), *scored_pairs(model, test_pairs), n_boot, seed)
        for model in (incumbent, candidate)
    )
    return comparison(inc, cand, len(test_pairs), len(cal_pairs), n_boot, seed)


def comparison(
    inc: PairErrorResult, cand: PairErrorResult, n_test: int, n_calibration: int, n_boot: int, seed: int
) -> dict[str, Any]:
    """Incumbent vs candidate pair errors on the same test pairs, with the paired-bootstrap CI of the change."""
    delta, lo, hi = paired_bootstrap(inc.errors, cand.errors, n_boot, seed)
    return {
        "incumbent": inc.to_dict(),
        "candidate": cand.to_dict(),
        "delta_error": delta,
        "delta_ci95": [lo, hi],
        # The seed's "share of mistakes avoided".
        "relative_error_reduction": 1 - cand.error_rate / inc.error_rate if inc.error_rate else None,
        "n_test": int(n_test),
        "n_calibration": int(n_calibration),
    }


def scored_pairs(model: Encoder, pairs: Sequence[LabelledPair]) -> tuple[np.ndarray, np.ndarray]:
    """(cosine scores, labels) of some pairs, the two inputs pair_error takes per part."""
    return cosine_scores(model, pairs), np.array([p.label for p in pairs], dtype=int)


def calibration_and_test(
    pairs: Sequence[LabelledPair], calibration: Sequence[LabelledPair] | None, fraction: float, seed: int
) -> tuple[list[LabelledPair], list[LabelledPair]]:
    """Return (calibration pairs, test pairs): the given calibration set, or a grouped split of `pairs`."""
    if calibration is not None:
        return list(calibration), list(pairs)
    cal_idx, test_idx = split_calibration(pairs, fraction, seed)
    return [pairs[i] for i in cal_idx], [pairs[i] for i in test_idx]


def compare_scored(
    pairs: list[LabelledPair], incumbent: np.ndarray, candidate: np.ndarray, seed: int, n_boot: int = 1000
) -> dict[str, Any] | None:
    """`compare_pair_error` on precomputed cosines (query-side adapters score queries and documents apart).

    Same split (half calibration, grouped by query), same logistic threshold and paired bootstrap; None when
    the pairs cannot support a threshold fit (too few, or one class only).
    """
    labels = np.array([p.label for p in pairs], dtype=int)
    if len(pairs) < 4 or set(labels.tolist()) != {0, 1}:
        return None
    try:
        cal, test = split_calibration(pairs, 0.5, seed)
        inc, cand = (
            pair_error(scores[cal], labels[cal], scores[test], labels[test], n_boot, seed)
            for scores in (incumbent, candidate)
        )
    except InvalidInput as exc:
        log.warning("pair error not measurable: %s", exc)
        return None
    return comparison(inc, cand, test.size, cal.size, n_boot, seed)
