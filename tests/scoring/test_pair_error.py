"""Pair error: the threshold fit, the grouped split, the paired bootstrap, and paired model comparisons."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from flywheel.errors import InvalidInput
from flywheel.scoring.pair_error import (
    compare_pair_error,
    compare_scored,
    cosine_scores,
    pair_error,
    paired_bootstrap,
    split_calibration,
)
from flywheel.types import LabelledPair
from tests.helpers.encoders import TableEncoder


@pytest.fixture(scope="module")
def tiny_model(tiny_model_path: Path) -> Any:
    """The tiny random BERT, loaded once for this module."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(tiny_model_path), device="cpu")


def test_pair_error_on_constructed_scores() -> None:
    """A clean calibration set puts the threshold near 0.5; 10 of 80 test pairs are then wrong."""
    rng = np.random.default_rng(0)
    scores_cal = np.concatenate([rng.uniform(0.6, 1.0, 50), rng.uniform(0.0, 0.4, 50)])
    labels_cal = np.array([1] * 50 + [0] * 50)
    scores_test = np.array([0.7] * 36 + [0.3] * 4 + [0.2] * 34 + [0.8] * 6)
    labels_test = np.array([1] * 40 + [0] * 40)
    result = pair_error(scores_cal, labels_cal, scores_test, labels_test, n_boot=2000, seed=1)
    assert result.error_rate == pytest.approx(10 / 80)
    assert 0.4 < result.threshold < 0.6
    # Pairwise wins: (36 + 4) positives beat the 34 low negatives, none beats the 6 high ones.
    assert result.roc_auc == pytest.approx((36 * 34 + 4 * 34) / 1600)
    lo, hi = result.ci95
    assert 0.03 < lo < 0.125 < hi < 0.25
    assert result.n == 80 and result.n_calibration == 100 and result.positive_rate == 0.5
    assert json.loads(json.dumps(result.to_dict()))["ci95"] == [lo, hi]


def test_pair_error_needs_both_classes_in_calibration() -> None:
    """A one-class calibration set cannot place a threshold."""
    with pytest.raises(InvalidInput, match="only one class"):
        pair_error(np.array([0.9, 0.8]), np.array([1, 1]), np.array([0.5]), np.array([0]))


def test_paired_bootstrap_contains_truth_and_beats_unpaired_on_correlated_data() -> None:
    """When items vary far more than the systems differ, pairing shrinks the CI of the difference."""
    rng = np.random.default_rng(42)
    difficulty = rng.normal(0.0, 1.0, 500)
    a = difficulty + rng.normal(0.0, 0.05, 500)
    b = difficulty + 0.1 + rng.normal(0.0, 0.05, 500)
    mean, lo, hi = paired_bootstrap(a, b, n_boot=2000, seed=0)
    assert mean == pytest.approx(float(np.mean(b - a)))
    assert lo < 0.1 < hi
    # Unpaired: resample a and b independently, as if they came from different test items.
    boot = np.random.default_rng(1).integers(0, 500, size=(2, 2000, 500))
    unpaired = np.percentile(b[boot[1]].mean(axis=1) - a[boot[0]].mean(axis=1), [2.5, 97.5])
    assert unpaired[0] < 0.1 < unpaired[1]
    assert hi - lo < 0.1 * (unpaired[1] - unpaired[0])
    assert paired_bootstrap(a, b, seed=0) == paired_bootstrap(a, b, seed=0)
    with pytest.raises(InvalidInput):
        paired_bootstrap(a, b[:10])


def test_split_calibration_groups_queries_and_is_deterministic() -> None:
    """Pairs of one query (case/space-insensitive) never straddle the split; the split repeats exactly."""
    pairs = [LabelledPair(f"Query {i // 3}", f"doc {i}", i % 2) for i in range(300)]
    pairs += [LabelledPair("  query 7 ", "odd spacing", 1)]
    cal, test = split_calibration(pairs, fraction=0.5, seed=3)
    assert sorted([*cal, *test]) == list(range(len(pairs))) and not set(cal) & set(test)
    side = {}
    for part, idx in (("cal", cal), ("test", test)):
        for i in idx:
            key = " ".join(pairs[i].query.lower().split())
            assert side.setdefault(key, part) == part
    assert 140 <= len(cal) <= 160
    again = split_calibration(pairs, fraction=0.5, seed=3)
    assert np.array_equal(cal, again[0]) and np.array_equal(test, again[1])
    assert not np.array_equal(cal, split_calibration(pairs, fraction=0.5, seed=4)[0])
    with pytest.raises(InvalidInput, match="cannot split"):
        split_calibration([LabelledPair("same", "x", 1), LabelledPair("same", "y", 0)])


def test_cosine_scores_encode_each_text_once() -> None:
    """Shared texts are embedded once, and scores are cosines of the (normalised) vectors."""
    enc = TableEncoder({"a": [1, 0], "b": [3, 4], "c": [0, 2]})
    pairs = [LabelledPair("a", "b", 1), LabelledPair("a", "c", 0), LabelledPair("b", "c", 1)]
    assert np.allclose(cosine_scores(enc, pairs), [0.6, 0.0, 0.8])
    assert sorted(enc.encoded) == ["a", "b", "c"]


def test_compare_pair_error_pairs_models_on_one_split(tiny_model: Any) -> None:
    """A perfect candidate beats the random tiny model: negative delta, CI below zero, 100% reduction."""
    rng = np.random.default_rng(0)
    words = ["python", "pasta", "car", "music", "garden", "money", "travel", "sleep", "phone", "dog"]
    pairs, table = [], {}
    for i in range(120):
        topic, other = words[i % 10], words[(i + 3) % 10]
        q, d = f"how to {topic} {i}", f"best {topic if i % 2 else other} way {i}"
        pairs.append(LabelledPair(q, d, i % 2))
        vec = rng.normal(size=8)
        table[q] = vec
        table[d] = vec if i % 2 else -vec  # cosine 1 for duplicates, -1 otherwise
    out = compare_pair_error(tiny_model, TableEncoder(table), pairs, n_boot=500, seed=0)
    assert out["candidate"]["error_rate"] == 0.0
    assert out["incumbent"]["error_rate"] > 0.02  # word overlap lets even a random BERT separate some
    assert out["delta_error"] == pytest.approx(-out["incumbent"]["error_rate"])
    assert out["delta_ci95"][1] < 0
    assert out["relative_error_reduction"] == pytest.approx(1.0)
    same = compare_pair_error(tiny_model, tiny_model, pairs, n_boot=200)
    assert same["delta_error"] == 0.0 and same["delta_ci95"] == [0.0, 0.0]
    assert same["n_test"] + same["n_calibration"] == len(pairs)


def test_compare_scored_matches_labels_and_refuses_one_class() -> None:
    pairs = [LabelledPair(f"q{i}", f"d{i}", i % 2) for i in range(200)]
    labels = np.array([p.label for p in pairs], float)
    noise = np.random.default_rng(1).normal(scale=0.4, size=200)
    out = compare_scored(pairs, labels + noise, labels + noise / 4, seed=0)
    assert out["candidate"]["error_rate"] < out["incumbent"]["error_rate"]
    assert out["delta_ci95"][1] < 0 and out["n_test"] + out["n_calibration"] == 200
    assert compare_scored([LabelledPair("a", "b", 1)] * 10, np.ones(10), np.ones(10), seed=0) is None
