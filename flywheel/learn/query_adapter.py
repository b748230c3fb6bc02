"""Training a query adapter on cached vectors: a softmax over documents plus an optional pair loss, from identity."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from flywheel.models.loading import set_torch_threads
from flywheel.models.query_adapter import normalise

LOSSES = ("mnrl", "mnrl+bce", "bce")
NEGATIVES = ("corpus", "in-batch")


@dataclass
class AdapterConfig:
    """Hyperparameters of adapter training; the defaults are the measured best (bench/learners.py)."""

    loss: str = "mnrl"
    # What the clicked document is ranked against: "corpus" = every document vector (above `full_corpus_max`
    # documents, each query's `corpus_top_n` nearest by the base model), so a query learns to beat the whole
    # index it is served from; "in-batch" = the other examples' documents and the query's skips only.
    negatives: str = "corpus"
    corpus_top_n: int = 256
    full_corpus_max: int = 50_000
    epochs: int = 20
    learning_rate: float = 1e-3
    batch_size: int = 128
    # Inverse temperature of the softmax (sentence-transformers' MNRL uses 20) and an L2 pull of W towards I.
    scale: float = 20.0
    identity_weight: float = 0.01
    bias: bool = True  # learn the offset b (else b stays 0)
    # Early stopping: this share of the training queries is set aside, and the epoch whose weights rank their
    # clicked documents best (mean reciprocal rank over the candidates) is kept; 0 trains every epoch.
    validation_share: float = 0.15
    patience: int = 4
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
    best_epoch: int | None = None  # with early stopping: the epoch kept
    validation_mrr: list[float] | None = None  # per epoch, on the set-aside training queries

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
    weights: np.ndarray | None = None,
) -> AdapterTraining:
    """Train a linear query adapter on cached, normalised vectors.

    Args:
        queries: (n_queries, dim) base-model query vectors.
        docs: (n_docs, dim) base-model document vectors (never changed): the whole index for "corpus" negatives.
        examples: (n, 3) int rows (query row, clicked doc row, skipped doc row or -1): a softmax ranks the
            clicked document above the corpus (or, "in-batch", above the other examples' documents and the
            skipped one). The query's other clicked documents are never counted as its negatives.
        pairs: (m, 3) int rows (query row, doc row, label 0/1) for the pairwise loss ("bce" term): a logistic
            loss on a learned threshold of the cosine, the decision the pair error measures.
        config: hyperparameters.
        weights: (n,) weight of each example in the ranking loss (e.g. inverse propensity of its click);
            default 1.

    Returns:
        The trained weights, loss curve (mean per epoch), steps, duration and, with early stopping, the
        epoch kept.
    """

    config = config or AdapterConfig()
    if config.loss not in LOSSES:
        raise ValueError(f"unknown adapter loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    if config.negatives not in NEGATIVES:
        raise ValueError(f"unknown adapter negatives {config.negatives!r}; choose one of {', '.join(NEGATIVES)}")
    previous_threads = set_torch_threads(config.threads)
    try:
        return _Trainer(queries, docs, examples, pairs, config, weights).run()
    finally:
        set_torch_threads(previous_threads)


class _Trainer:
    """The training loop of `train_adapter` (threads already set): one object so the pieces stay small."""

    def __init__(
        self,
        queries: np.ndarray,
        docs: np.ndarray,
        examples: np.ndarray,
        pairs: np.ndarray | None,
        config: AdapterConfig,
        weights: np.ndarray | None,
    ) -> None:
        import torch

        self.started = time.monotonic()
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.q = torch.from_numpy(normalise(queries))
        self.d = torch.from_numpy(normalise(docs))
        dim = self.q.shape[1]
        self.weight = torch.nn.Parameter(torch.eye(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim), requires_grad=config.bias)
        # The pairwise term's own threshold and slope on cosine, fitted jointly (not part of the adapter).
        self.slope, self.offset = torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-7.0))
        ex = np.asarray(examples, dtype=np.int64).reshape(-1, 3)
        w = np.ones(len(ex), np.float32) if weights is None else np.asarray(weights, np.float32).reshape(-1)
        if len(w) != len(ex):
            raise ValueError(f"{len(w)} weights for {len(ex)} examples")
        self.positives: dict[int, set[int]] = {}
        for qrow, doc, _ in ex:
            self.positives.setdefault(int(qrow), set()).add(int(doc))
        train_rows, self.val_rows = self._validation_split(ex)
        self.ex, self.w = torch.from_numpy(ex[train_rows]), torch.from_numpy(w[train_rows] / max(w.mean(), 1e-9))
        self.val = torch.from_numpy(ex[self.val_rows])
        no_pairs = np.zeros((0, 3))
        self.pr = torch.from_numpy(np.asarray(pairs if pairs is not None else no_pairs, np.int64).reshape(-1, 3))
        self.use_rank = "mnrl" in config.loss and len(self.ex) > 1
        self.use_pairs = "bce" in config.loss and len(self.pr) > 1
        if not (self.use_rank or self.use_pairs):
            raise ValueError("not enough training examples for the adapter (need at least 2)")
        # Large corpora: rank against each query's nearest documents by the base model (fixed once).
        self.top_n = None
        if config.negatives == "corpus" and len(self.d) > config.full_corpus_max:
            n = min(config.corpus_top_n, len(self.d))
            self.top_n = torch.topk(self.q @ self.d.T, n, dim=1).indices

    def _validation_split(self, ex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows for training and for early stopping, split by query so validation queries are unseen."""
        share = self.config.validation_share
        query_rows = np.unique(ex[:, 0])
        if share <= 0 or len(query_rows) < 20:  # too few queries to judge an epoch by
            return np.arange(len(ex)), np.zeros(0, np.int64)
        rng = np.random.default_rng(self.config.seed)
        held = set(rng.choice(query_rows, max(1, int(round(share * len(query_rows)))), replace=False).tolist())
        mask = np.array([int(r) in held for r in ex[:, 0]])
        return np.flatnonzero(~mask), np.flatnonzero(mask)

    def adapt(self, rows: Any) -> Any:
        import torch

        return torch.nn.functional.normalize(self.q[rows] @ self.weight.T + self.bias, dim=-1)

    def _candidates(self, rows: Any) -> tuple[Any, Any]:
        """(logits of each example's query against its candidates, index of its clicked document)."""
        import torch

        qa = self.adapt(rows[:, 0])
        if self.config.negatives == "in-batch":
            candidates = self.d[rows[:, 1]]
            negs = rows[:, 2][rows[:, 2] >= 0]
            if len(negs):
                candidates = torch.cat([candidates, self.d[negs]])
            return self.config.scale * qa @ candidates.T, torch.arange(len(rows))
        if self.top_n is None:
            logits, cand = self.config.scale * qa @ self.d.T, None
        else:
            cand = torch.cat([rows[:, 1:2], self.top_n[rows[:, 0]]], dim=1)  # the click first, then the nearest
            logits = self.config.scale * torch.einsum("bd,bnd->bn", qa, self.d[cand])
        mask = torch.zeros_like(logits, dtype=torch.bool)
        for i, (qrow, doc, _) in enumerate(rows.tolist()):
            others = self.positives[qrow] - {doc}
            if cand is None:
                mask[i, list(others)] = True
                continue
            if others:
                mask[i] = torch.isin(cand[i], torch.tensor(sorted(others), dtype=cand.dtype))
            mask[i, 1:] |= cand[i, 1:] == doc  # the click again among the nearest: count it once
        logits = logits.masked_fill(mask, float("-inf"))
        return logits, (rows[:, 1] if cand is None else torch.zeros(len(rows), dtype=torch.long))

    def _validation_mrr(self) -> float:
        """Mean reciprocal rank of the set-aside queries' clicked documents among their candidates."""
        import torch

        with torch.no_grad():
            logits, target = self._candidates(self.val)
            mine = logits.gather(1, target[:, None])
            ranks = (logits > mine).sum(1) + 1
            return float((1.0 / ranks.float()).mean())

    def run(self) -> AdapterTraining:
        import torch

        config = self.config
        params = [self.weight, self.slope, self.offset] + ([self.bias] if config.bias else [])
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
        eye = torch.eye(self.q.shape[1])
        n_batches = max(1, -(-max(len(self.ex), len(self.pr)) // config.batch_size))
        curve: list[list[float]] = []
        val_mrr: list[float] = []
        best: tuple[float, int, Any, Any] | None = None
        steps = 0
        if len(self.val):
            val_mrr.append(round(self._validation_mrr(), 5))  # epoch 0: the identity, the base model
            best = (val_mrr[0], 0, self.weight.detach().clone(), self.bias.detach().clone())
        for epoch in range(1, config.epochs + 1):
            ex_order = torch.randperm(len(self.ex), generator=self.generator)
            pr_order = torch.randperm(len(self.pr), generator=self.generator)
            total = 0.0
            for b in range(n_batches):
                loss = torch.zeros(())
                if self.use_rank:
                    idx = _cycle_slice(ex_order, b, config.batch_size)
                    logits, target = self._candidates(self.ex[idx])
                    per_example = torch.nn.functional.cross_entropy(logits, target, reduction="none")
                    loss = loss + (per_example * self.w[idx]).mean()
                if self.use_pairs:
                    rows = self.pr[_cycle_slice(pr_order, b, config.batch_size)]
                    cos = (self.adapt(rows[:, 0]) * self.d[rows[:, 1]]).sum(-1)
                    loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(
                        self.slope * cos + self.offset, rows[:, 2].float()
                    )
                if config.identity_weight:
                    loss = loss + config.identity_weight * ((self.weight - eye) ** 2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                steps += 1
            curve.append([steps, round(total / n_batches, 5)])  # [step, epoch mean]: what the report charts
            if best is not None:
                val_mrr.append(round(self._validation_mrr(), 5))
                if val_mrr[-1] > best[0]:
                    best = (val_mrr[-1], epoch, self.weight.detach().clone(), self.bias.detach().clone())
                elif epoch - best[1] >= config.patience:
                    break
        weight, bias = (best[2], best[3]) if best is not None else (self.weight.detach(), self.bias.detach())
        return AdapterTraining(
            weight=weight.numpy().astype(np.float32),
            bias=bias.numpy().astype(np.float32),
            duration_s=round(time.monotonic() - self.started, 3),
            steps=steps,
            loss_curve=curve,
            examples=len(self.ex) + len(self.val),
            pairs=len(self.pr),
            hyperparameters=config.to_dict(),
            best_epoch=best[1] if best is not None else None,
            validation_mrr=val_mrr or None,
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
