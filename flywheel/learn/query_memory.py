"""Building a query memory from mined feedback: per query, Rocchio's shift towards what users chose.

See `flywheel.models.query_memory` for how it is applied. The shift of a query with clicked documents P and
passed-over documents N is `beta * mean_w(P) - gamma * mean_w(N)`, where each document's weight is its vote
(optionally inverse-propensity weighted, so a click at rank 8 counts for the many users who never looked
that far). Queries without a clicked document are not remembered (there is nothing to move towards).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flywheel.models.query_adapter import normalise
from flywheel.models.query_memory import QueryMemory


@dataclass
class MemoryConfig:
    """How a memory is built and looked up; the defaults are chosen by principle, see docs/adapters.md."""

    threshold: float = 0.8  # cosine of a near-duplicate question under MiniLM-like models
    beta: float = 1.0  # pull towards the clicked documents
    gamma: float = 0.25  # push from the passed-over ones (Rocchio's classic ratio is about 4-5 to 1)
    neighbours: int = 3
    max_entries: int = 20_000  # 20k x 384 floats x 2 = 61 MB at most

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for meta.json and reports."""
        return asdict(self)


def build_memory(
    queries: np.ndarray,
    docs: np.ndarray,
    rows: np.ndarray,
    config: MemoryConfig | None = None,
    weights: np.ndarray | None = None,
    popularity: np.ndarray | None = None,
) -> QueryMemory:
    """A memory over the queries of `rows`.

    Args:
        queries: (n_queries, dim) base-model query vectors (the keys).
        docs: (n_docs, dim) base-model document vectors.
        rows: (m, 3) int rows (query row, doc row, label 1 clicked / 0 passed over).
        config: lookup and shift parameters.
        weights: (m,) weight of each row's vote (default 1; e.g. inverse propensity).
        popularity: (n_queries,) how often each query was asked; with more queries than `max_entries`, the
            most asked are kept.

    Returns:
        The memory (possibly empty).
    """
    config = config or MemoryConfig()
    rows = np.asarray(rows, dtype=np.int64).reshape(-1, 3)
    w = np.ones(len(rows), np.float32) if weights is None else np.asarray(weights, np.float32)
    d = normalise(docs)
    dim = d.shape[1] if d.ndim == 2 else queries.shape[1]
    sums = {1: np.zeros((len(queries), dim), np.float32), 0: np.zeros((len(queries), dim), np.float32)}
    mass = {1: np.zeros(len(queries), np.float32), 0: np.zeros(len(queries), np.float32)}
    for (q, doc, label), weight in zip(rows, w, strict=True):
        sums[int(label)][q] += weight * d[doc]
        mass[int(label)][q] += weight
    remembered = np.flatnonzero(mass[1] > 0)
    if popularity is not None and len(remembered) > config.max_entries:
        order = np.argsort(-np.asarray(popularity)[remembered], kind="stable")
        remembered = np.sort(remembered[order[: config.max_entries]])
    remembered = remembered[: config.max_entries]
    pos = sums[1][remembered] / mass[1][remembered, None]
    neg = np.divide(sums[0][remembered], np.maximum(mass[0][remembered, None], 1e-12))
    shifts = config.beta * pos - config.gamma * neg
    keys = normalise(queries[remembered]) if len(remembered) else np.zeros((0, dim), np.float32)
    return QueryMemory(keys, shifts.astype(np.float32).reshape(-1, dim), config.threshold, config.neighbours)
