"""Factories for test data: API bodies, feedback events, the topic world, shipped pairs and cycle reports."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path
from typing import Any

from flywheel.types import LabelledPair, TrainingExample
from flywheel.util.packaged import QUORA_DEV_PAIRS

CORPUS = [
    ("d1", "How do I learn Python quickly?"),
    ("d2", "What is the best way to learn Python programming?"),
    ("d3", "How can I lose weight fast?"),
    ("d4", "What are healthy ways to lose weight?"),
    ("d5", "Which is the best laptop for programming?"),
    ("d6", "How do I cook rice in a pot?"),
    ("d7", "What is the capital of France?"),
    ("d8", "Why is the sky blue?"),
]


def make_documents(items: list[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
    """API document bodies from (id, text) pairs (default: the small test corpus)."""
    return [{"id": i, "text": t, "metadata": {"n": n}} for n, (i, t) in enumerate(items or CORPUS)]


_event_ids = itertools.count()


def make_event(search_id: str, doc_id: str, type: str = "click", **extra: Any) -> dict[str, Any]:
    """One feedback event body with a fresh event_id."""
    return {"event_id": f"e{next(_event_ids)}", "search_id": search_id, "doc_id": doc_id, "type": type, **extra}


# A small world the tiny model's vocabulary knows: a query is relevant to the documents of its topic.
TOPICS = "python pasta car paris phone weight money guitar dog garden rain planet cake bike hotel piano".split()
DOC_TEMPLATES = ["the best {t} guide", "good {t} tips", "how {t} works"]
QUERY_TEMPLATES = [
    "how do i {t}",
    "what is the best {t}",
    "where can i find {t}",
    "why is {t} good",
    "which {t} is good",
    "can you help with {t}",
    "my {t} is bad",
    "when to {t}",
]


def world_documents() -> list[dict[str, Any]]:
    """The topic world's documents (API bodies, topic in metadata)."""
    return [
        {"id": f"{t}-{i}", "text": tpl.format(t=t), "metadata": {"topic": t}}
        for t in TOPICS
        for i, tpl in enumerate(DOC_TEMPLATES)
    ]


def world_queries() -> tuple[dict[str, str], dict[str, set[str]]]:
    """The topic world's queries and their relevant documents."""
    queries, relevant = {}, {}
    for t in TOPICS:
        for j, tpl in enumerate(QUERY_TEMPLATES):
            queries[f"{t}-q{j}"] = tpl.format(t=t)
            relevant[f"{t}-q{j}"] = {f"{t}-{i}" for i in range(len(DOC_TEMPLATES))}
    return queries, relevant


def world_pairs(n_queries: int = 40) -> list[LabelledPair]:
    """Labelled (query, document) pairs of the topic world: per query one relevant and one other document."""
    queries, relevant = world_queries()
    docs = {d["id"]: d["text"] for d in world_documents()}
    pairs = []
    for i, (qid, text) in enumerate(sorted(queries.items())[:n_queries]):
        positive = sorted(relevant[qid])[0]
        negative = sorted(set(docs) - relevant[qid])[i]
        pairs += [LabelledPair(text, docs[positive], 1), LabelledPair(text, docs[negative], 0)]
    return pairs


def quora_pairs(folder: Path, n: int) -> Path:
    """The first `n` shipped Quora dev pairs (real, hard, both labels) as `folder/pairs.jsonl`."""
    path = Path(folder) / "pairs.jsonl"
    with gzip.open(QUORA_DEV_PAIRS, "rt", encoding="utf-8") as fh:
        path.write_text("".join(itertools.islice(fh, n)), encoding="utf-8")
    return path


# Searches for fine-tuning: seven topics a click shares with its query, seven others a skip is about.
TRAIN_TOPICS = ["cook pasta", "learn python", "fix car", "play guitar", "grow tomato", "save money", "visit paris"]
TRAIN_OTHERS = ["buy phone", "train dog", "bake cake", "book hotel", "run gym", "read novel", "sing song"]


def make_training_examples(n: int = 48) -> list[TrainingExample]:
    """Searches on seven topics: the click shares the topic, the skip is another topic; a few lack skips."""
    examples = []
    for i in range(n):
        topic, other = TRAIN_TOPICS[i % 7], TRAIN_OTHERS[(i // 7) % 7]
        negatives = () if i % 6 == 5 else (f"how to {other} {i}", f"why {other} {i + 1}")
        examples.append(TrainingExample(f"how do i {topic} {i}", f"best way to {topic} {i}", negatives))
    return examples


# Texts for encoder parity checks: ordinary, one letter, and one over the tiny model's 64-token limit.
PARITY_TEXTS = ["how do i learn python", "the best pasta recipe for dinner", "why is the sky blue", "x", "guitar " * 80]

XSS = "<script>alert(1)</script>"


def make_report(
    cycle_id: str = "c20261127T201500-ab12",
    created_at: str = "2026-11-27T20:15:00+00:00",
    decision: str = "promoted",
    **overrides: Any,
) -> dict[str, Any]:
    """A complete cycle report in the documented shape (a user's query carries XSS)."""
    report = {
        "cycle_id": cycle_id,
        "created_at": created_at,
        "kind": "full",
        "decision": decision,
        "reasons": ["error rate 18.1% vs 22.0%: -3.9 pt (95% CI -5.0..-2.8)", "nDCG@10 0.66 >= 0.61 & p < 0.05"],
        "checks": [
            {"name": "error_rate_improvement", "passed": True, "detail": "-3.9 pt"},
            {"name": "golden_set", "passed": False, "detail": "golden set missing"},
        ],
        "error": None,
        "incumbent": "v1",
        "candidate": "v2",
        "serving_after": "v2",
        "window": {"start": "2026-11-20T00:00:00+00:00", "end": "2026-11-27T20:00:00+00:00"},
        "counts": {
            "events": 1234,
            "searches": 400,
            "pairs": 900,
            "positives": 300,
            "negatives": 600,
            "queries": 150,
            "train_pairs": 700,
            "heldout_pairs": 200,
            "heldout_queries": 40,
            "train_examples": 700,
        },
        "metrics": {
            "pair_error": {
                "incumbent": {"error_rate": 0.22, "ci95": [0.2, 0.24], "roc_auc": 0.85, "n": 500},
                "candidate": {"error_rate": 0.181, "ci95": [0.16, 0.2], "roc_auc": 0.88, "n": 500},
                "delta": {"mean": -0.039, "ci95": [-0.05, -0.028]},
                "relative_reduction": 0.1773,
            },
            "retrieval": {
                "ndcg@10": {"incumbent": 0.61, "candidate": 0.66, "delta": 0.05, "ci95": [0.03, 0.07]},
                "mrr@10": {"incumbent": 0.55, "candidate": 0.6, "delta": 0.05, "ci95": [0.02, 0.08]},
                "recall@10": {"incumbent": 0.8, "candidate": 0.84, "delta": 0.04, "ci95": [0.01, 0.07]},
                "n_queries": 120,
            },
            "golden": None,
        },
        "training": {
            "duration_s": 120.5,
            "steps": 300,
            "device": "cpu",
            "stopped_early": False,
            "loss_curve": [[10, 1.2], [20, 0.9], [30, 0.7]],
            "hyperparameters": {"lr": 2e-5, "batch": 32},
        },
        "timings": {"mine": 0.4, "train": 120.5, "evaluate": 10.2, "reembed": 30.1, "swap": 0.01},
        "examples": [
            {
                "query": f"how to learn python {XSS}",
                "relevant": ["d1"],
                "before": [{"doc_id": "d3", "text": "lose weight <b>fast</b>"}],
                "after": [{"doc_id": "d1", "text": "How do I learn Python quickly?"}],
            }
        ],
    }
    report.update(overrides)
    return report
