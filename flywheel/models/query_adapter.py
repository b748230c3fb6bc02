"""Query-side adapters: a linear map applied to the base model's query vectors, trained on cached vectors.

A query adapter changes only how queries are embedded: documents keep the base model's vectors, so the
index is never rebuilt and promoting an adapter is a switch of the query transform (see `Service.swap`).
Training reads vectors the loop already has (query vectors logged with each search, document vectors of
the base collection), so it encodes nothing and takes seconds on a CPU.

The map is `y = normalise(W x + b)`, initialised at identity (W = I, b = 0), so an untrained adapter is the
base model. There is no output-dimension reduction: a smaller output would need the same projection on the
documents, i.e. a re-index, which is what adapters exist to avoid (256 dims on both sides measured 18.9% vs
18.7% pair error at full dim, so there is nothing to win either). An adapter may carry a query memory
(`flywheel.models.query_memory`): questions already answered move towards what users chose, after the map.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.models.query_memory import QueryMemory
from flywheel.util.files import read_json

log = logging.getLogger(__name__)

WEIGHTS_FILE = "adapter.safetensors"


def normalise(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise rows (cosine = dot product), as float32."""
    vectors = np.asarray(vectors, dtype=np.float32)
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class QueryAdapter:
    """A trained query transform of one registry version; immutable, so it is swapped as a whole."""

    version: str
    parent: str  # the base version: its encoder embeds the queries, its collection holds the documents
    weight: np.ndarray = field(repr=False)  # (dim, dim)
    bias: np.ndarray = field(repr=False)  # (dim,)
    memory: QueryMemory | None = None  # applied after the map

    @property
    def dimension(self) -> int:
        """Input and output dimension (the base model's)."""
        return int(self.weight.shape[0])

    @classmethod
    def identity(cls, dim: int, version: str = "identity", parent: str = "") -> QueryAdapter:
        """The adapter that changes nothing (the starting point of training, and the base's own scores)."""
        return cls(version, parent, np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32))

    def apply(self, vectors: np.ndarray) -> np.ndarray:
        """Map base-model query vectors (n, dim) or (dim,) to adapted, re-normalised vectors."""
        vectors = np.asarray(vectors, dtype=np.float32)
        adapted = normalise(vectors @ self.weight.T + self.bias)
        if self.memory is None:
            return adapted
        if adapted.ndim == 1:
            return self.memory.shift(normalise(vectors[None]), adapted[None])[0]
        return self.memory.shift(normalise(vectors), adapted)

    def save(self, folder: Path) -> Path:
        """Write the weights as safetensors (no pickle) into a version's folder; returns the file."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / WEIGHTS_FILE
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        tensors = {"weight": np.ascontiguousarray(self.weight), "bias": np.ascontiguousarray(self.bias)}
        save_file({**tensors, **(self.memory.tensors() if self.memory else {})}, str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: Path, version: str, parent: str) -> QueryAdapter:
        """Read an adapter saved by `save`.

        Raises:
            FileNotFoundError: the folder has no adapter weights (e.g. pruned).
        """
        from safetensors.numpy import load_file

        tensors = load_file(str(Path(folder) / WEIGHTS_FILE))
        weight, bias = tensors["weight"].astype(np.float32), tensors["bias"].astype(np.float32)
        return cls(version, parent, weight, bias, QueryMemory.from_tensors(tensors))


class AdaptedQueries:
    """Quacks like an Encoder for the query side of an evaluation: base vectors, then the adapter.

    `version` is the base version (whose collection holds the documents), so code that looks up a version's
    collection finds the right one; `model` is the object itself, for code that calls `model.encode`.
    """

    def __init__(self, version: str, base_encode: Any, adapter: QueryAdapter | None) -> None:
        """Args: version: the base version; base_encode: texts -> base vectors; adapter: None = identity."""
        self.version = version
        self._base_encode = base_encode
        self.adapter = adapter
        self.model = self

    def encode(self, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        """Base vectors of `texts` through the adapter (extra arguments are accepted and ignored)."""
        vectors = normalise(self._base_encode(list(texts)))
        return self.adapter.apply(vectors) if self.adapter is not None else vectors


META_FILE = "meta.json"
KIND = "query-adapter"


def is_adapter_dir(path: str | Path) -> bool:
    """True when `path` is a folder written by `train_adapter_file` (weights plus meta.json of this kind)."""
    folder = Path(path)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / META_FILE).is_file():
        return False
    return read_json(folder / META_FILE).get("kind") == KIND
