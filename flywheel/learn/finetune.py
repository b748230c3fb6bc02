"""Fine-tune a sentence-transformers model on (query, click, skips) examples (in a child: flywheel.learn.subprocess)."""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import examples_from_labelled, is_triplet_file, load_labelled_pairs, load_training_examples
from flywheel.models.loading import resolve_model, set_torch_threads
from flywheel.types import LabelledPair, TrainingExample
from flywheel.util.files import move_into_place, prepare_tmp_dir, write_json_atomic
from flywheel.util.packaged import DEFAULT_MODEL_ALIASES

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

LossName = Literal["mnrl", "cached_mnrl", "contrastive", "mnrl+contrastive"]
LOSSES: tuple[str, ...] = ("mnrl", "cached_mnrl", "contrastive", "mnrl+contrastive")
DEFAULT_BASE_MODEL = DEFAULT_MODEL_ALIASES[0]
# Learning rates used when TrainConfig.learning_rate is None: the frozen-dense layer is a fresh linear layer that
# needs much larger steps than the pretrained transformer.
DEFAULT_LR_FULL = 2e-5
DEFAULT_LR_ADAPTER = 1e-3
# About this many loss points per run, so the curve is readable without flooding the log.
_LOSS_POINTS = 25


@dataclass
class TrainConfig:
    """Hyperparameters of one fine-tuning run (all JSON-serialisable, recorded in meta.json)."""

    # Measured in bench/compare_losses.py (MiniLM, Quora dev): with human-labelled negatives (real skips)
    # MNRL + OnlineContrastive cut the pair error from 21.5% to 18.0% (contrastive alone: 18.2%), while
    # in-batch MNRL and model-mined negatives changed nothing; only this mix also raised MRR@10.
    loss: LossName = "mnrl+contrastive"
    epochs: float = 1.0
    batch_size: int = 32
    cuda_batch_size: int | None = None  # used instead of batch_size on CUDA (the GPU has room for more)
    learning_rate: float | None = None
    warmup_ratio: float = 0.1
    max_steps: int | None = None
    max_minutes: float | None = None
    dim: int | None = None
    frozen_dense: bool = False  # freeze the base, train a Dense layer after pooling (its own learning rate)
    seed: int = 42
    device: str = "auto"
    threads: int | None = None  # torch threads while training, restored after (None: leave torch's setting)
    max_negatives: int = 3
    contrastive_margin: float = 0.5
    mnrl_scale: float = 20.0

    def effective_learning_rate(self) -> float:
        """The learning rate actually used (mode-dependent when unset)."""
        if self.learning_rate is not None:
            return self.learning_rate
        return DEFAULT_LR_ADAPTER if self.frozen_dense else DEFAULT_LR_FULL

    def validate(self) -> None:
        """Raise InvalidInput on settings that cannot train."""
        if self.loss not in LOSSES:
            raise InvalidInput(f"unknown loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        checks = {
            "epochs must be > 0": self.epochs > 0,
            "batch_size must be >= 2": self.batch_size >= 2,
            "cuda_batch_size must be >= 2": self.cuda_batch_size is None or self.cuda_batch_size >= 2,
            "max_steps must be >= 1": self.max_steps is None or self.max_steps >= 1,
            "max_minutes must be > 0": self.max_minutes is None or self.max_minutes > 0,
            "dim must be >= 1": self.dim is None or self.dim >= 1,
            "warmup_ratio must be in [0, 1)": 0 <= self.warmup_ratio < 1,
            "max_negatives must be >= 0": self.max_negatives >= 0,
        }
        for message, ok in checks.items():
            if not ok:
                raise InvalidInput(f"{message}, got {getattr(self, message.split()[0])}")


@dataclass
class TrainResult:
    """What a training run produced; the same fields as meta.json plus the model directory."""

    model_dir: str
    base_model: str
    created_at: str
    dimension: int
    hyperparameters: dict[str, Any]
    n_examples: int
    n_with_negatives: int
    device: str
    duration_s: float
    steps: int
    stopped_early: bool
    stop_reason: str | None
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    kind: str = "finetune"
    planned_steps: int = 0
    n_pairs: int = 0
    n_rows: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        out = asdict(self)
        out["loss_curve"] = [[step, loss] for step, loss in self.loss_curve]
        return out

    @classmethod
    def from_meta(cls, meta: dict[str, Any], model_dir: str | Path) -> TrainResult:
        """Rebuild a result from a meta.json dict."""
        fields = {k: v for k, v in meta.items() if k in cls.__dataclass_fields__ and k != "model_dir"}
        fields["loss_curve"] = [(int(s), float(v)) for s, v in meta.get("loss_curve", [])]
        return cls(model_dir=str(model_dir), **fields)


def train_model(
    base_model: str,
    examples: Sequence[TrainingExample],
    out_dir: Path,
    config: TrainConfig,
    progress: bool = True,
    *,
    pairs: Sequence[LabelledPair] = (),
) -> TrainResult:
    """Fine-tune `base_model` on the examples and save it, with meta.json, to `out_dir`.

    Training happens in a temporary directory beside `out_dir` that is renamed into place only when
    the model and meta.json are complete, so a failure never leaves a half-written model directory.

    Args:
        base_model: Model directory, hub name, or "all-MiniLM-L6-v2" (the packaged copy).
        examples: (query, positive, negatives) examples; negatives are used as hard negatives.
        out_dir: Where the model goes; must not exist or be empty.
        config: Hyperparameters.
        progress: Show the trainer's progress bar.
        pairs: Extra labelled pairs (e.g. skips of searches without a click). The contrastive term uses
            every pair; the ranking term uses those that form examples via `examples_from_labelled`.

    Returns:
        The run's metadata and `model_dir`.
    """
    out_dir = Path(out_dir)
    tmp = prepare_tmp_dir(out_dir)
    try:
        meta = train_into(base_model, examples, tmp, config, progress, list(pairs))
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainResult.from_meta(meta, out_dir)


def train_from_file(
    pairs_path: str | Path,
    out_dir: str | Path,
    base_model: str = DEFAULT_BASE_MODEL,
    config: TrainConfig | None = None,
    progress: bool = True,
) -> TrainResult:
    """Load training examples from a file and fine-tune (behind `flywheel train`).

    Args:
        pairs_path: Triplet JSONL(.gz) or any labelled-pair file (see flywheel.formats.pairs).
        out_dir: Where the model goes; must not exist or be empty.
        base_model: Model directory, hub name, or "all-MiniLM-L6-v2".
        config: Hyperparameters; defaults to TrainConfig().
        progress: Show the trainer's progress bar.

    Returns:
        The run's metadata and `model_dir`.
    """
    # Labelled files also go in whole, so a contrastive term sees negatives of queries without a positive.
    pairs = [] if is_triplet_file(pairs_path) else load_labelled_pairs(pairs_path)
    examples = examples_from_labelled(pairs) if pairs else load_training_examples(pairs_path)
    if not examples:
        raise InvalidInput(f"{pairs_path}: no training examples (a query needs at least one positive)")
    return train_model(base_model, examples, Path(out_dir), config or TrainConfig(), progress, pairs=pairs)


def train_into(
    base_model: str,
    examples: Sequence[TrainingExample],
    target: Path,
    config: TrainConfig,
    progress: bool,
    pairs: list[LabelledPair],
) -> dict[str, Any]:
    """Train and save the model plus meta.json into the existing empty directory `target`."""
    import torch
    from sentence_transformers import SentenceTransformerTrainer
    from transformers import PrinterCallback, set_seed

    config.validate()
    if not examples and not pairs:
        raise InvalidInput("no training examples")
    started = time.monotonic()
    # The wall-clock budget starts now: loading the model counts, as it does for a scheduled cycle.
    monitor = _monitor(None if config.max_minutes is None else started + 60.0 * config.max_minutes)
    device = ("cuda" if torch.cuda.is_available() else "cpu") if config.device == "auto" else config.device
    set_seed(config.seed)
    model = _load_for_training(base_model, device, config)
    datasets = _build_datasets(examples, pairs, config)
    if not datasets:
        raise InvalidInput(f"loss {config.loss!r} has nothing to train on (it needs queries with a positive)")
    losses = {name: _make_loss(model, name, config) for name in datasets}
    # Inside `target`, so a killed child leaves nothing behind once the parent removes its temp dir.
    work_dir = target / ".trainer"
    try:
        args = _training_args(work_dir, config, device, progress)
        trainer = SentenceTransformerTrainer(
            model=model, args=args, train_dataset=datasets, loss=losses, callbacks=[monitor]
        )
        trainer.remove_callback(PrinterCallback)  # the loss goes to meta.json and the progress bar instead
        planned = math.ceil(len(trainer.get_train_dataloader()) * config.epochs)
        steps_cap = min(planned, config.max_steps) if config.max_steps else planned
        # Passing the cap to the trainer (rather than stopping in a callback) keeps the LR schedule whole.
        trainer.args.max_steps = steps_cap
        trainer.args.logging_steps = max(1, steps_cap // _LOSS_POINTS)
        # A cycle in the serving process trains on every core and gives the serving encoder its setting back.
        serving_threads = set_torch_threads(config.threads)
        try:
            trainer.train()
        finally:
            set_torch_threads(serving_threads)
        steps = int(trainer.state.global_step)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    model.truncate_dim = config.dim
    model.save(str(target), create_model_card=False)
    stop_reason = "max_minutes" if monitor.out_of_time else ("max_steps" if steps_cap < planned else None)
    hyper = asdict(config)
    hyper["learning_rate"] = config.effective_learning_rate()
    meta = {
        "kind": "finetune",
        "base_model": str(base_model),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dimension": int(model.get_embedding_dimension()),
        "hyperparameters": hyper,
        "n_examples": len(examples),
        "n_with_negatives": sum(1 for ex in examples if ex.negatives),
        "n_pairs": len(pairs),
        "n_rows": {name: len(ds) for name, ds in datasets.items()},
        "device": device,
        "duration_s": round(time.monotonic() - started, 3),
        "steps": steps,
        "planned_steps": planned,
        "stopped_early": stop_reason is not None,
        "stop_reason": stop_reason,
        "loss_curve": monitor.points,
        "torch_threads": config.threads or torch.get_num_threads(),  # while training
    }
    write_json_atomic(target / "meta.json", meta)
    return meta


def _load_for_training(base_model: str, device: str, config: TrainConfig) -> SentenceTransformer:
    """Load the base model; with frozen_dense freeze it and add an identity-initialised Dense after pooling."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    try:
        model = SentenceTransformer(resolve_model(base_model), device=device)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"cannot load base model {base_model!r}: {exc}") from exc
    # A model saved with truncate_dim would otherwise train and report the truncated size.
    model.truncate_dim = None
    # No model card is written, so skip the trainer's widget-example pass over the data.
    model.model_card_data.generate_widget_examples = False
    full_dim = model.get_embedding_dimension()
    if config.dim is not None and config.dim >= full_dim:
        raise InvalidInput(f"dim {config.dim} must be smaller than the model's dimension {full_dim}")
    if config.frozen_dense:
        for param in model.parameters():
            param.requires_grad_(False)
        # Starting at the identity means the Dense layer starts exactly at the base model.
        identity = {"init_weight": torch.eye(full_dim), "init_bias": torch.zeros(full_dim)}
        dense = Dense(full_dim, full_dim, activation_function=torch.nn.Identity(), **identity).to(device)
        kinds = [type(m) for m in model]
        # Right after pooling, so a Normalize layer still follows and the output stays unit-length.
        fallback = kinds.index(Normalize) if Normalize in kinds else len(kinds)
        model.insert(max((i + 1 for i, k in enumerate(kinds) if k is Pooling), default=fallback), dense)
    return model


def _build_datasets(
    examples: Sequence[TrainingExample], pairs: Sequence[LabelledPair], config: TrainConfig
) -> dict[str, Any]:
    """Turn examples into the named datasets each loss needs (the skips go in as negatives / label 0)."""
    out: dict[str, Any] = {}
    if config.loss in ("mnrl", "cached_mnrl", "mnrl+contrastive"):
        # Callers may pass the pairs that `examples` came from; dedup so nothing is counted twice.
        ranking = list(dict.fromkeys([*examples, *examples_from_labelled(pairs)]))
        # One row per (query, positive, negative), so every skip reaches the loss next to its click.
        cap = config.max_negatives
        triplets = [(ex.query, ex.positive, neg) for ex in ranking for neg in ex.negatives[:cap]]
        positives = [(ex.query, ex.positive) for ex in ranking if not ex.negatives or cap == 0]
        if triplets:
            out["triplets"] = _dataset(("anchor", "positive", "negative"), triplets)
        if positives:
            out["pairs"] = _dataset(("anchor", "positive"), positives)
    if config.loss in ("contrastive", "mnrl+contrastive"):
        rows = dict.fromkeys((ex.query, ex.positive, 1) for ex in examples)
        rows.update(dict.fromkeys((ex.query, neg, 0) for ex in examples for neg in ex.negatives))
        rows.update(dict.fromkeys((p.query, p.document, int(p.label > 0)) for p in pairs))
        out["labelled"] = _dataset(("sentence1", "sentence2", "label"), list(rows))
    return out


def _dataset(columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> Any:
    """A datasets.Dataset with the given columns from row tuples (column order is what the losses read)."""
    from datasets import Dataset

    return Dataset.from_dict({name: [row[i] for row in rows] for i, name in enumerate(columns)})


def _make_loss(model: SentenceTransformer, dataset_name: str, config: TrainConfig) -> Any:
    """The loss for one dataset, wrapped in MatryoshkaLoss over [full, dim] when a dim is set."""
    from sentence_transformers.sentence_transformer import losses

    if dataset_name == "labelled":
        loss = losses.OnlineContrastiveLoss(model, margin=config.contrastive_margin)
    elif config.loss == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, scale=config.mnrl_scale)
    else:
        loss = losses.MultipleNegativesRankingLoss(model, scale=config.mnrl_scale)
    if config.dim is not None:
        dims = [model.get_embedding_dimension(), config.dim]
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=dims)
    return loss


def _training_args(work_dir: Path, config: TrainConfig, device: str, progress: bool) -> Any:
    """Trainer arguments: checkpoints off, logs to nowhere, mixed precision only on CUDA."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    cuda = device.startswith("cuda")
    bf16 = cuda and torch.cuda.is_bf16_supported()
    # transformers 5 takes the warmup ratio as a float warmup_steps and deprecates warmup_ratio.
    warmup = (
        {"warmup_steps": float(config.warmup_ratio)}
        if int(transformers.__version__.split(".")[0]) >= 5
        else {"warmup_ratio": config.warmup_ratio}
    )
    return SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),  # removed before saving: nothing but the model may land in out_dir
        num_train_epochs=config.epochs,
        per_device_train_batch_size=(config.cuda_batch_size or config.batch_size) if cuda else config.batch_size,
        learning_rate=config.effective_learning_rate(),
        **warmup,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # an in-batch duplicate would be a false negative
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=not progress,
        use_cpu=not cuda,
        bf16=bf16,
        fp16=cuda and not bf16,
    )


def _monitor(deadline: float | None) -> Any:
    """A TrainerCallback that records (step, loss) in `.points` and stops cleanly once `deadline` passes."""
    from transformers import TrainerCallback

    class Monitor(TrainerCallback):
        """Loss curve plus wall-clock budget (transformers is imported lazily to keep imports fast)."""

        def __init__(self) -> None:
            """Start with an empty curve and time left."""
            self.points: list[tuple[int, float]] = []
            self.out_of_time = False

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            """After each optimiser step, ask the trainer to stop when the budget is spent."""
            if deadline is not None and time.monotonic() >= deadline:
                self.out_of_time = control.should_training_stop = True
            return control

        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
            """Keep the running loss (the end-of-training summary logs `train_loss` instead)."""
            if logs and "loss" in logs:
                self.points.append((int(state.global_step), float(logs["loss"])))
            return control

    return Monitor()
