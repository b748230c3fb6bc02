"""Retrieval metrics: hand-computed MRR, nDCG and Recall, and paired comparisons of two models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flywheel.scoring.ranking import compare_retrieval, retrieval_scores
from tests.helpers.encoders import TableEncoder, angle


def test_retrieval_metrics_match_hand_computed_values() -> None:
    """Docs at 0..40 degrees rank d1 > d2 > ... for a query at 0; metrics follow from the ranks."""
    corpus = {f"d{i + 1}": f"text d{i + 1}" for i in range(5)}
    table = {f"text d{i + 1}": angle(10 * i) for i in range(5)}
    table.update({"q1": angle(0), "q2": angle(-5), "q3": angle(-1), "q4": angle(0)})
    queries = {"q1": "q1", "q2": "q2", "q3": "q3", "q4": "q4"}
    relevant = {"q1": {"d2", "d4"}, "q2": {"d1"}, "q3": {"d5", "missing"}, "q4": {"gone"}}
    out = retrieval_scores(TableEncoder(table), queries, corpus, relevant, k=3)
    assert list(out["query_ids"]) == ["q1", "q2", "q3"]  # q4 has no relevant doc in the corpus
    # q1: hit at rank 2 of 3 (d4 is rank 4); q2: hit at rank 1; q3: d5 is rank 5, outside the top 3.
    assert np.allclose(out["mrr@3"], [1 / 2, 1.0, 0.0])
    assert np.allclose(out["ndcg@3"], [(1 / math.log2(3)) / (1 + 1 / math.log2(3)), 1.0, 0.0])
    assert np.allclose(out["recall@3"], [1 / 2, 1.0, 0.0])
    precomputed = np.array([angle(10 * i) for i in range(5)]) * 7.0  # unnormalised on purpose
    again = retrieval_scores(TableEncoder(table), queries, corpus, relevant, k=3, corpus_embeddings=precomputed)
    assert np.allclose(again["ndcg@3"], out["ndcg@3"])


def test_compare_retrieval_pairs_the_same_queries() -> None:
    """A candidate that moves q1's relevant doc to rank 1 gains exactly on q1; deltas are paired."""
    corpus = {"d1": "d1", "d2": "d2"}
    base = {"d1": angle(0), "d2": angle(30), "q1": angle(0), "q2": angle(0)}
    better = {**base, "q1": angle(40)}
    relevant = {"q1": {"d2"}, "q2": {"d1"}}
    out = compare_retrieval(TableEncoder(base), TableEncoder(better), {"q1": "q1", "q2": "q2"}, corpus, relevant, k=2)
    assert out["incumbent"]["mrr@2"] == pytest.approx(0.75) and out["candidate"]["mrr@2"] == pytest.approx(1.0)
    assert out["delta"]["mrr@2"]["mean"] == pytest.approx(0.25)
    assert out["n_queries"] == 2 and out["k"] == 2


def test_a_condensed_list_ranks_only_the_judged_documents() -> None:
    from flywheel.scoring.ranking import retrieval_scores

    class Fixed:
        def encode(self, texts, **_):  # one query along the first axis
            return np.array([[1.0, 0.0]] * len(texts))

    corpus = {"top": "", "clicked": "", "skipped": ""}
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])  # "top" was never shown: unjudged
    whole = retrieval_scores(Fixed(), {"q": "q"}, corpus, {"q": {"clicked"}}, 10, vectors)
    judged = retrieval_scores(
        Fixed(), {"q": "q"}, corpus, {"q": {"clicked"}}, 10, vectors, {"q": ["clicked", "skipped"]}
    )
    assert whole["mrr@10"][0] == 0.5 and judged["mrr@10"][0] == 1.0
