"""Query memory: questions users already answered with their clicks move towards what they chose (Rocchio).

A memory holds, per remembered query, its base-model vector (the key) and a shift in document space:
`beta * mean(clicked documents) - gamma * mean(passed-over documents)` (Rocchio 1971; the documents' votes can
be weighted by inverse propensity, as CoRocchio does, Zhuang et al. SIGIR 2022). An incoming query looks up
its nearest keys; each key at cosine `s >= threshold` adds its shift with weight `(s - threshold) / (1 -
threshold)`, so an exact repeat gets the whole shift and a merely related question little or none. Nothing is
re-indexed: only the query vector moves. Bounded: at most `max_entries` keys (the most-asked queries).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class QueryMemory:
    """Remembered queries and the shifts their feedback earned; immutable, versioned with its adapter."""

    keys: np.ndarray = field(repr=False)  # (m, dim) unit base-model query vectors
    shifts: np.ndarray = field(repr=False)  # (m, dim) in document space
    threshold: float = 0.8
    neighbours: int = 3

    def __post_init__(self) -> None:
        if self.keys.shape != self.shifts.shape or self.keys.ndim != 2:
            raise ValueError(f"memory keys {self.keys.shape} and shifts {self.shifts.shape} must be (m, dim) alike")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"memory threshold must be between 0 and 1, got {self.threshold}")

    @property
    def size(self) -> int:
        """How many queries are remembered."""
        return int(self.keys.shape[0])

    def shift(self, base: np.ndarray, adapted: np.ndarray) -> np.ndarray:
        """Move `adapted` query vectors by the shifts of their near-duplicate keys (looked up by `base`).

        Args:
            base: (n, dim) unit base-model query vectors (what the keys are compared with).
            adapted: (n, dim) the vectors to move (the adapter's output, or `base` itself).

        Returns:
            (n, dim) unit vectors; rows with no key above the threshold are returned unchanged.
        """
        if not self.size or not len(base):
            return adapted
        sims = base @ self.keys.T
        k = min(self.neighbours, self.size)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        near = np.take_along_axis(sims, top, axis=1)
        weight = np.clip((near - self.threshold) / (1.0 - self.threshold), 0.0, 1.0)
        total = weight.sum(1, keepdims=True)
        if not total.any():
            return adapted
        # A weighted mean of the shifts, scaled by the strongest match (so one exact repeat moves fully).
        mean = np.einsum("nk,nkd->nd", weight, self.shifts[top]) / np.maximum(total, 1e-12)
        moved = adapted + mean * weight.max(1, keepdims=True)
        return moved / np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays to store beside an adapter's weights."""
        return {
            "memory_keys": np.ascontiguousarray(self.keys, dtype=np.float32),
            "memory_shifts": np.ascontiguousarray(self.shifts, dtype=np.float32),
            "memory_params": np.asarray([self.threshold, self.neighbours], dtype=np.float32),
        }

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray]) -> QueryMemory | None:
        """The memory stored by `tensors`, or None for an adapter saved without one."""
        if "memory_keys" not in tensors:
            return None
        threshold, neighbours = tensors["memory_params"].tolist()
        return cls(tensors["memory_keys"], tensors["memory_shifts"], float(threshold), int(neighbours))
