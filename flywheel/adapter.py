"""Query-side adapters: a linear map applied to the base model's query vectors, trained on cached vectors.

A query adapter changes only how queries are embedded: documents keep the base model's vectors, so the
index is never rebuilt and promoting an adapter is a switch of the query transform (see `Service.swap`).
Training reads vectors the loop already has (query vectors logged with each search, document vectors of
the base collection), so it encodes nothing and takes seconds on a CPU.

The map is `y = normalise(W x + b)`, initialised at identity (W = I, b = 0), so an untrained adapter is the
base model. There is no output-dimension reduction: a smaller output would need the same projection on the
documents, i.e. a re-index, which is what adapters exist to avoid (the issue measured 256 dims on both
sides at 18.9% vs 18.7% at full dim, so there is nothing to win either).
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.evaluate import comparison, pair_error, split_calibration

if TYPE_CHECKING:
    from flywheel.datasets import LabelledPair
    from flywheel.encoder import Encoder

log = logging.getLogger(__name__)

WEIGHTS_FILE = "adapter.safetensors"
LOSSES = ("mnrl", "mnrl+bce", "bce")


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
        return normalise(vectors @ self.weight.T + self.bias)

    def save(self, folder: Path) -> Path:
        """Write the weights as safetensors (no pickle) into a version's folder; returns the file."""
        from safetensors.numpy import save_file

        folder.mkdir(parents=True, exist_ok=True)
        path = folder / WEIGHTS_FILE
        tmp = folder / f".{WEIGHTS_FILE}.tmp"
        save_file({"weight": np.ascontiguousarray(self.weight), "bias": np.ascontiguousarray(self.bias)}, str(tmp))
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
        return cls(version, parent, tensors["weight"].astype(np.float32), tensors["bias"].astype(np.float32))


@dataclass
class AdapterConfig:
    """Hyperparameters of adapter training; the defaults are the measured best (bench/adapter_vs_full.py)."""

    loss: str = "mnrl+bce"
    epochs: int = 10
    learning_rate: float = 5e-4
    batch_size: int = 256
    # Inverse temperature of the in-batch softmax (sentence-transformers' MNRL uses 20) and an L2 pull of W
    # towards I. On simulated clicks, 20 and no pull moved rankings so far that the held-out nDCG guard
    # rejected the adapter (-0.028); 5 and 0.01 kept most of the pair-error gain at -0.005 nDCG. On labelled
    # Quora pairs, 20 and no pull reach 15.7% dev error vs 19.6% (bench/adapter_losses.py): a trade-off.
    scale: float = 5.0
    identity_weight: float = 0.01
    bias: bool = True  # learn the offset b (else b stays 0)
    seed: int = 42
    # Torch threads while training (restored after): the matrices are small, and on a busy 2-core box two
    # threads were measured 30x slower than one (thread hand-offs dominate).
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for meta.json and reports."""
        return asdict(self)


@dataclass
class AdapterTraining:
    """What `train_adapter` returns: the weights and how training went."""

    weight: np.ndarray
    bias: np.ndarray
    duration_s: float
    steps: int
    loss_curve: list[list[float]]
    examples: int
    pairs: int
    hyperparameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The report's `training` section (weights left out)."""
        out = {k: v for k, v in asdict(self).items() if k not in ("weight", "bias")}
        out["device"] = "cpu"
        return out


def train_adapter(
    queries: np.ndarray,
    docs: np.ndarray,
    examples: np.ndarray,
    pairs: np.ndarray | None = None,
    config: AdapterConfig | None = None,
) -> AdapterTraining:
    """Train a linear query adapter on cached, normalised vectors.

    Args:
        queries: (n_queries, dim) base-model query vectors.
        docs: (n_docs, dim) base-model document vectors (never changed).
        examples: (n, 3) int rows (query row, clicked doc row, skipped doc row or -1): the in-batch softmax
            ranks the clicked document above the other examples' documents and the skipped one.
        pairs: (m, 3) int rows (query row, doc row, label 0/1) for the pairwise loss ("bce" term): a logistic
            loss on a learned threshold of the cosine, the decision the pair error measures.
        config: hyperparameters.

    Returns:
        The trained weights, loss curve (mean per epoch), steps and duration.
    """
    import torch

    config = config or AdapterConfig()
    if config.loss not in LOSSES:
        raise ValueError(f"unknown adapter loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _train(queries, docs, examples, pairs, config)
    finally:
        torch.set_num_threads(previous_threads)


def _train(
    queries: np.ndarray, docs: np.ndarray, examples: np.ndarray, pairs: np.ndarray | None, config: AdapterConfig
) -> AdapterTraining:
    """The training loop of `train_adapter` (threads already set)."""
    import torch

    started = time.monotonic()
    generator = torch.Generator().manual_seed(config.seed)
    q = torch.from_numpy(normalise(queries))
    d = torch.from_numpy(normalise(docs))
    dim = q.shape[1]
    weight = torch.nn.Parameter(torch.eye(dim))
    bias = torch.nn.Parameter(torch.zeros(dim), requires_grad=config.bias)
    # The pairwise term's own threshold and slope on cosine, fitted jointly (not part of the adapter).
    slope, offset = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-7.0))
    params = [weight, slope, offset] + ([bias] if config.bias else [])
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    ex = torch.from_numpy(np.asarray(examples, dtype=np.int64).reshape(-1, 3))
    pr = torch.from_numpy(np.asarray(pairs if pairs is not None else np.zeros((0, 3)), dtype=np.int64).reshape(-1, 3))
    use_rank, use_pairs = "mnrl" in config.loss and len(ex) > 1, "bce" in config.loss and len(pr) > 1
    if not (use_rank or use_pairs):
        raise ValueError("not enough training examples for the adapter (need at least 2)")
    eye = torch.eye(dim)

    def adapt(rows: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(q[rows] @ weight.T + bias, dim=-1)

    n_batches = max(1, -(-max(len(ex), len(pr)) // config.batch_size))
    curve: list[list[float]] = []
    steps = 0
    for _ in range(config.epochs):
        ex_order = torch.randperm(len(ex), generator=generator)
        pr_order = torch.randperm(len(pr), generator=generator)
        total = 0.0
        for b in range(n_batches):
            loss = torch.zeros(())
            if use_rank:
                rows = ex[_cycle_slice(ex_order, b, config.batch_size)]
                qa = adapt(rows[:, 0])
                candidates = d[rows[:, 1]]
                negs = rows[:, 2][rows[:, 2] >= 0]
                if len(negs):
                    candidates = torch.cat([candidates, d[negs]])
                logits = config.scale * qa @ candidates.T
                loss = loss + torch.nn.functional.cross_entropy(logits, torch.arange(len(rows)))
            if use_pairs:
                rows = pr[_cycle_slice(pr_order, b, config.batch_size)]
                cos = (adapt(rows[:, 0]) * d[rows[:, 1]]).sum(-1)
                loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                    slope * cos + offset, rows[:, 2].float()
                )
            if config.identity_weight:
                loss = loss + config.identity_weight * ((weight - eye) ** 2).sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
            steps += 1
        curve.append([steps, round(total / n_batches, 5)])  # [step, epoch mean]: what the report charts
    return AdapterTraining(
        weight=weight.detach().numpy().astype(np.float32),
        bias=bias.detach().numpy().astype(np.float32),
        duration_s=round(time.monotonic() - started, 3),
        steps=steps,
        loss_curve=curve,
        examples=len(ex),
        pairs=len(pr),
        hyperparameters=config.to_dict(),
    )


def _cycle_slice(order: Any, batch: int, size: int) -> Any:
    """The `batch`-th slice of a permutation, wrapping around so the shorter of two streams repeats."""
    n = len(order)
    if n == 0:
        return order
    start = (batch * size) % n
    idx = order[start : start + size]
    if len(idx) < min(size, n):
        idx = order.new_tensor(list(idx) + list(order[: min(size, n) - len(idx)]))
    return idx


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


# --- evaluation on precomputed cosines (a query-side adapter scores queries and documents apart) ---------


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


def adapted_pair_error(
    encoder: Encoder, adapter: QueryAdapter | None, challenger: Any, pairs: list[LabelledPair], seed: int
) -> dict[str, Any] | None:
    """Pair error of (encoder + query adapter) against a full challenger model on labelled text pairs."""
    if not pairs:
        return None
    from flywheel.evaluate import cosine_scores

    queries = AdaptedQueries(encoder.version, encoder.encode, adapter).encode([p.query for p in pairs])
    docs = normalise(encoder.encode([p.document for p in pairs]))
    return compare_scored(pairs, (queries * docs).sum(1), cosine_scores(challenger, pairs), seed)


__all__ = [
    "AdaptedQueries",
    "AdapterConfig",
    "AdapterTraining",
    "QueryAdapter",
    "adapted_pair_error",
    "compare_scored",
    "normalise",
    "train_adapter",
]
