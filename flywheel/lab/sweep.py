"""The seed experiment as a grid: pair error vs number of training pairs, per base model, dimension and mode."""

from __future__ import annotations

import hashlib
import logging
import random
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import examples_from_labelled, load_labelled_pairs
from flywheel.lab.sweep_chart import draw_chart
from flywheel.lab.sweep_rows import MODES, canonical_mode, read_rows, write_rows
from flywheel.learn.finetune import TrainConfig, train_model
from flywheel.learn.finetune import TrainResult as _Result
from flywheel.learn.query_adapter_file import LABELLED_DEFAULTS, fit_query_adapter
from flywheel.models.loading import load_model
from flywheel.models.query_adapter import QueryAdapter
from flywheel.scoring.pair_error import (
    cosine_scores,
    encode_normalized,
    pair_error,
    paired_bootstrap,
    split_calibration,
)
from flywheel.types import LabelledPair
from flywheel.util.files import read_json
from flywheel.util.packaged import QUORA_DEV_PAIRS
from flywheel.util.progress import progress_bar

logger = logging.getLogger(__name__)

DEFAULT_SIZES = (100, 300, 1000, 3000, 10000)
DEFAULT_DIMS: tuple[int | None, ...] = (None, 256)
SHIPPED_EVAL = QUORA_DEV_PAIRS
# Share of the eval file used for training when no training file is given (split by query, see load_split).
TRAIN_SHARE_OF_EVAL = 0.5


@dataclass
class SweepSpec:
    """What to sweep and how to train each cell (everything that changes a result is part of its cell_id)."""

    eval_file: Path = SHIPPED_EVAL
    train_file: Path | None = None
    models: Sequence[str] = ("all-MiniLM-L6-v2",)
    sizes: Sequence[int] = DEFAULT_SIZES
    dims: Sequence[int | None] = DEFAULT_DIMS
    modes: Sequence[str] = MODES
    epochs: float = 1.0
    batch_size: int = 32
    loss: str | None = None
    seed: int = 42
    max_minutes: float | None = None
    n_boot: int = 1000
    symmetric: bool = False  # query-adapter cells also train each pair the other way round (duplicate questions)

    def __post_init__(self) -> None:
        self.modes = [canonical_mode(m) for m in self.modes]

    def validate(self) -> None:
        """Raise InvalidInput on a grid that cannot run."""
        if bad := [m for m in self.modes if m not in MODES]:
            raise InvalidInput(f"unknown mode {bad[0]!r}; choose from {', '.join(MODES)}")
        if bad_sizes := [s for s in self.sizes if s < 2]:
            raise InvalidInput(f"training sizes must be >= 2 pairs, got {bad_sizes[0]}")
        if bad_dims := [d for d in self.dims if d is not None and d < 1]:
            raise InvalidInput(f"dims must be >= 1 (or 'full'), got {bad_dims[0]}")
        if not self.models or not self.sizes or not self.dims or not self.modes:
            raise InvalidInput("the grid is empty: give at least one model, size, dim and mode")


@dataclass
class SplitData:
    """Training pairs (shuffled once, so smaller sizes are prefixes of larger ones) and the held-out split."""

    train: list[LabelledPair]
    calibration: list[LabelledPair]
    test: list[LabelledPair]
    data_key: str
    train_source: str


@dataclass
class _Base:
    """Cached scores of an untrained model at one dim: its result row and per-test-pair errors.

    Query-adapter cells reuse the base model and its vectors (truncated to the dim), embedding each text once.
    """

    row: dict[str, Any]
    errors: np.ndarray = field(repr=False)
    model: Any = field(default=None, repr=False)
    dim: int | None = None
    vectors: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length base vectors of `texts` at this dim, computed once per text."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
        if missing:
            self.model.truncate_dim = self.dim
            self.vectors.update(zip(missing, encode_normalized(self.model, missing), strict=True))
        return np.stack([self.vectors[t] for t in texts])


def load_split(spec: SweepSpec) -> SplitData:
    """Load the pairs and build the deterministic train / calibration / test split.

    Without a training file, the eval file is split by query (all pairs of a question on one side) into a
    training half and a held-out half; the held-out pairs are then split by query into calibration (to fit
    the threshold) and test (to measure the error) as `flywheel evaluate` does.

    Args:
        spec: The sweep specification.

    Returns:
        The split, with a key that changes whenever the data or the split changes.
    """
    pairs = load_labelled_pairs(spec.eval_file)
    if spec.train_file is None:
        train_idx, held_idx = split_calibration(pairs, TRAIN_SHARE_OF_EVAL, seed=spec.seed)
        train, held = [pairs[i] for i in train_idx], [pairs[i] for i in held_idx]
        source = f"{spec.eval_file} (train half, split by query)"
    else:
        train, held, source = load_labelled_pairs(spec.train_file), pairs, str(spec.train_file)
    if not train:
        raise InvalidInput(f"{source}: no training pairs")
    cal_idx, test_idx = split_calibration(held, 0.5, seed=spec.seed)
    random.Random(spec.seed).shuffle(train)
    digest = hashlib.sha1()
    for part in (train, held):
        for p in part:
            digest.update(f"{p.query}\t{p.document}\t{p.label}\n".encode())
        digest.update(b"--\n")
    return SplitData(train, [held[i] for i in cal_idx], [held[i] for i in test_idx], digest.hexdigest()[:12], source)


def grid(spec: SweepSpec) -> list[tuple[str, str, int | None, int]]:
    """All (model, mode, dim, size) cells, base rows first (mode "base", size 0) per model and dim."""
    cells: list[tuple[str, str, int | None, int]] = []
    for model in spec.models:
        cells += [(model, "base", dim, 0) for dim in spec.dims]
        cells += [(model, mode, dim, size) for mode in spec.modes for dim in spec.dims for size in sorted(spec.sizes)]
    return cells


def cell_id(spec: SweepSpec, data_key: str, model: str, mode: str, dim: int | None, size: int) -> str:
    """A stable id of one cell: the same settings on the same data give the same id (what resuming skips)."""
    train = "" if mode == "base" else f"{spec.epochs}|{spec.batch_size}|{spec.loss}|{spec.max_minutes}"
    train += "|symmetric" if spec.symmetric and mode == "query-adapter" else ""
    named = "adapter" if mode == "frozen-dense" else mode  # its first name: ids of finished cells stay valid
    text = f"{data_key}|{model}|{named}|{dim or 'full'}|{size}|{spec.seed}|{train}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def run_sweep(
    spec: SweepSpec,
    out_csv: Path,
    chart: Path | None = None,
    work_dir: Path | None = None,
    keep_models: bool = False,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every cell of the grid not yet in `out_csv`, appending one row per finished cell.

    Args:
        spec: Grid and training settings.
        out_csv: The results file; rows already there (same cell_id) are skipped, so a rerun resumes.
        chart: Where to draw the PNG (default: `out_csv` with a .png suffix).
        work_dir: Where cell models are trained (default: `<out_csv stem>-models` beside the CSV).
        keep_models: Keep each trained model instead of deleting it once evaluated.
        progress: Show a rich progress bar.
        on_row: Called with each new row (e.g. to print it).

    Returns:
        The rows of this run's data (done before or now), in grid order.
    """
    spec.validate()
    out_csv = Path(out_csv)
    rows = read_rows(out_csv)
    done = {row["cell_id"] for row in rows}
    data = load_split(spec)
    work_dir = Path(work_dir) if work_dir else out_csv.with_name(f"{out_csv.stem}-models")
    _remove_stale_tmp(work_dir)
    cells = [(c, cell_id(spec, data.data_key, *c)) for c in grid(spec)]
    if too_big := sorted({size for (_, _, _, size), _ in cells if size > len(data.train)}):
        logger.warning("skipping sizes %s: only %d training pairs in %s", too_big, len(data.train), data.train_source)
    todo = [(c, cid) for c, cid in cells if cid not in done and c[3] <= len(data.train)]
    bases: dict[tuple[str, int | None], _Base] = {}
    with progress_bar() if progress else _NoProgress() as bar:
        task = bar.add_task("sweep", total=len(todo))
        for (model, mode, dim, size), cid in todo:
            bar.update(task, description=f"{_short(model)} {mode} dim={dim or 'full'} n={size}")
            base = bases.get((model, dim)) or bases.setdefault((model, dim), _evaluate_base(spec, data, model, dim))
            row = base.row if mode == "base" else _run_cell(spec, data, base, (model, mode, dim, size), work_dir)
            row = {**row, "cell_id": cid, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
            rows.append(row)
            write_rows(out_csv, rows)
            if not keep_models and mode != "base":
                shutil.rmtree(work_dir / cid, ignore_errors=True)
            if on_row is not None:
                on_row(row)
            bar.advance(task)
    if work_dir.exists() and not any(work_dir.iterdir()):
        work_dir.rmdir()
    mine = {cid for _, cid in cells}
    result = [row for row in rows if row["cell_id"] in mine]
    draw_chart(result, chart or out_csv.with_suffix(".png"))
    return result


def _evaluate_base(spec: SweepSpec, data: SplitData, model_name: str, dim: int | None) -> _Base:
    """Error of the untrained model at `dim` (also the reference of every trained cell's paired delta)."""
    model = load_model(model_name)
    result, emb_dim = _pair_error(model, dim, data, spec)
    row = _row(spec, data, model_name, "base", dim, 0, emb_dim, result)
    row.update(base_error_rate=result.error_rate, delta_vs_base=0.0, delta_ci_low=0.0, delta_ci_high=0.0)
    row.update(relative_reduction=0.0, n_train=0, train_seconds=0.0, steps=0)
    return _Base(row, result.errors, model, dim)


def _run_cell(
    spec: SweepSpec, data: SplitData, base: _Base, cell: tuple[str, str, int | None, int], work_dir: Path
) -> dict[str, Any]:
    """Train one cell (or reuse the model a killed run finished) and evaluate it against the base."""
    model_name, mode, dim, size = cell
    if mode == "query-adapter":
        return _run_query_adapter_cell(spec, data, base, cell)
    out_dir = work_dir / cell_id(spec, data.data_key, *cell)
    if (out_dir / "meta.json").exists():
        result = _Result.from_meta(read_json(out_dir / "meta.json"), out_dir)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)  # a folder without meta.json is not a finished model
        config = TrainConfig(
            epochs=spec.epochs, batch_size=spec.batch_size, dim=dim, frozen_dense=mode == "frozen-dense",
            seed=spec.seed, max_minutes=spec.max_minutes,
        )  # fmt: skip
        if spec.loss:
            config.loss = spec.loss  # type: ignore[assignment]
        pairs = data.train[:size]
        examples = examples_from_labelled(pairs)
        result = train_model(model_name, examples, out_dir, config, progress=False, pairs=pairs)
    trained = load_model(out_dir)
    scored, emb_dim = _pair_error(trained, dim, data, spec)
    delta, lo, hi = paired_bootstrap(base.errors, scored.errors, spec.n_boot, spec.seed)
    row = _row(spec, data, model_name, mode, dim, size, emb_dim, scored)
    base_error = float(base.row["error_rate"])
    row.update(
        n_train=size, base_error_rate=base_error, delta_vs_base=delta, delta_ci_low=lo, delta_ci_high=hi,
        relative_reduction=1 - scored.error_rate / base_error if base_error else None,
        train_seconds=round(result.duration_s, 2), steps=result.steps, stop_reason=result.stop_reason or "",
        learning_rate=result.hyperparameters.get("learning_rate"), loss=result.hyperparameters.get("loss"),
    )  # fmt: skip
    return row


def _run_query_adapter_cell(
    spec: SweepSpec, data: SplitData, base: _Base, cell: tuple[str, str, int | None, int]
) -> dict[str, Any]:
    """Frozen base + a query-side linear map (flywheel.learn.query_adapter) trained on the cell's pairs, in seconds."""
    from dataclasses import replace

    model_name, mode, dim, size = cell
    pairs = data.train[:size]
    q, d = base.encode([p.query for p in pairs]), base.encode([p.document for p in pairs])
    n = len(pairs)
    rows = [(i, n + i, int(p.label > 0)) for i, p in enumerate(pairs)]  # query i against document n + i
    config = replace(LABELLED_DEFAULTS, seed=spec.seed, epochs=max(1, round(spec.epochs * LABELLED_DEFAULTS.epochs)))
    vectors = np.concatenate([q, d])
    trained = fit_query_adapter(vectors, rows, config, spec.symmetric)
    adapter = QueryAdapter("cell", model_name, trained.weight, trained.bias)
    held = data.calibration + data.test
    scores = (adapter.apply(base.encode([p.query for p in held])) * base.encode([p.document for p in held])).sum(1)
    labels = np.array([p.label for p in held], dtype=int)
    n_cal = len(data.calibration)
    scored = pair_error(scores[:n_cal], labels[:n_cal], scores[n_cal:], labels[n_cal:], spec.n_boot, spec.seed)
    delta, lo, hi = paired_bootstrap(base.errors, scored.errors, spec.n_boot, spec.seed)
    row = _row(spec, data, model_name, mode, dim, size, int(vectors.shape[1]), scored)
    base_error = float(base.row["error_rate"])
    row.update(
        n_train=size, base_error_rate=base_error, delta_vs_base=delta, delta_ci_low=lo, delta_ci_high=hi,
        relative_reduction=1 - scored.error_rate / base_error if base_error else None,
        train_seconds=trained.duration_s, steps=trained.steps, epochs=config.epochs, batch_size=config.batch_size,
        learning_rate=config.learning_rate, loss=config.loss,
    )  # fmt: skip
    return row


def _pair_error(model: Any, dim: int | None, data: SplitData, spec: SweepSpec) -> tuple[Any, int]:
    """Pair error of `model` truncated to `dim` on the held-out split, and the embedding size it used."""
    full = int(model.get_embedding_dimension() if model.truncate_dim is None else model.truncate_dim)
    if dim is not None and dim > full:
        raise InvalidInput(f"dim {dim} is larger than the model's dimension {full}")
    model.truncate_dim = dim
    labels = np.array([p.label for p in data.calibration + data.test], dtype=int)
    scores = cosine_scores(model, data.calibration + data.test)
    n_cal = len(data.calibration)
    result = pair_error(scores[:n_cal], labels[:n_cal], scores[n_cal:], labels[n_cal:], spec.n_boot, spec.seed)
    return result, dim or full


def _row(
    spec: SweepSpec, data: SplitData, model: str, mode: str, dim: int | None, size: int, emb_dim: int, result: Any
) -> dict[str, Any]:
    """The settings and metrics every row has (training columns are filled in by the caller)."""
    return {
        "model": model, "mode": mode, "dim": dim or "full", "embedding_dim": emb_dim, "size": size,
        "n_calibration": result.n_calibration, "n_test": result.n, "error_rate": result.error_rate,
        "ci_low": result.ci95[0], "ci_high": result.ci95[1], "roc_auc": result.roc_auc, "stop_reason": "",
        "epochs": spec.epochs, "batch_size": spec.batch_size, "loss": spec.loss or "", "learning_rate": "",
        "seed": spec.seed, "train_file": data.train_source, "eval_file": str(spec.eval_file),
        "data_key": data.data_key,
    }  # fmt: skip


def _remove_stale_tmp(work_dir: Path) -> None:
    """Delete half-trained temp folders a killed run left behind (train_model's `.<name>.training-*`)."""
    if work_dir.is_dir():
        for stale in work_dir.glob(".*.training-*"):
            shutil.rmtree(stale, ignore_errors=True)


def _short(model: str) -> str:
    """A model's display name: the last path component."""
    return Path(model.rstrip("/")).name or model


class _NoProgress:
    """Stands in for a rich Progress when progress is off."""

    def __enter__(self) -> _NoProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None

    def advance(self, *args: Any, **kwargs: Any) -> None:
        return None
