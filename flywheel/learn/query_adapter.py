"""Training a query adapter on cached vectors: a softmax over documents plus an optional pair loss, from identity."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flywheel.models.query_adapter import normalise

LOSSES = ("mnrl", "mnrl+bce", "bce")


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


def rotate_negatives(rows: Iterable[tuple[int, int, int]]) -> np.ndarray:
    """(query, positive, hard negative or -1) example rows from (query, doc, label) rows; negatives rotate.

    Each positive document of a query is one example; that query's negative documents take turns as its hard
    negative (in order), so no negative is used twice before every one is used once; -1 when a query has none.
    Queries keep the order of their first positive.
    """
    positives: dict[int, list[int]] = {}
    negatives: dict[int, list[int]] = {}
    for q, d, y in rows:
        (positives if y else negatives).setdefault(q, []).append(d)
    out = []
    for q, docs in positives.items():
        negs = negatives.get(q) or [-1]
        out += [(q, d, negs[i % len(negs)]) for i, d in enumerate(docs)]
    return np.asarray(out, dtype=np.int64).reshape(-1, 3)


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
