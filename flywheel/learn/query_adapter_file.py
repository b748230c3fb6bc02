"""Stand-alone query adapters: train one on a labelled pair file, save it with provenance, and score it.

This is the adapter cycle's model kind (flywheel.learn.query_adapter) outside the loop, behind `flywheel train
--query-adapter` and `flywheel evaluate`: the base model embeds every distinct text of the file once, and the
linear query map is trained on those cached vectors in seconds. The folder holds `adapter.safetensors` and a
`meta.json` naming the base model, the data and the hyperparameters; `flywheel evaluate` recognises it and
scores adapted queries against base-model documents, next to the bare base on the same split.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.errors import InvalidInput
from flywheel.formats.pairs import load_labelled_pairs, pair_texts
from flywheel.learn.query_adapter import LOSSES, AdapterConfig, AdapterTraining, rotate_negatives, train_adapter
from flywheel.models.loading import load_model, resolve_model
from flywheel.models.query_adapter import KIND, META_FILE, QueryAdapter
from flywheel.scoring.pair_error import encode_normalized
from flywheel.util.files import move_into_place, prepare_tmp_dir, write_json_atomic
from flywheel.util.progress import progress_bar

log = logging.getLogger(__name__)

# Labelled pairs are not clicks: with human labels the sharp in-batch softmax and no pull towards identity
# measured best (bench/adapter_losses.py: 15.7% dev error vs 19.6% with the click-tuned scale 5 / pull 0.01,
# which exist to keep rankings steady on noisy clicks).
# Labelled pairs (duplicate questions): in-batch negatives and every epoch, the setting bench/adapter_losses.py
# measured; the corpus softmax and early stopping are tuned for click logs.
LABELLED_DEFAULTS = AdapterConfig(
    loss="mnrl+bce",
    negatives="in-batch",
    scale=20.0,
    identity_weight=0.0,
    epochs=10,
    learning_rate=5e-4,
    batch_size=256,
    validation_share=0.0,
)


def train_adapter_file(
    pairs_path: str | Path,
    out_dir: str | Path,
    base_model: str,
    config: AdapterConfig | None = None,
    symmetric: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a query adapter on a labelled pair file and save it, complete or not at all, to `out_dir`.

    Args:
        pairs_path: Labelled pairs (question1,question2,is_duplicate or query,document,label; JSONL or TSV/CSV).
        out_dir: Where the adapter goes; must not exist or be empty.
        base_model: The frozen model whose vectors the adapter maps (name, path or packaged alias).
        config: Hyperparameters; default `LABELLED_DEFAULTS`.
        symmetric: Also train every pair the other way round (duplicate questions have no query side).
        progress: Show a progress bar while the base model embeds the texts.

    Returns:
        The meta.json written beside the weights.

    Raises:
        InvalidInput: No usable pairs, only one class, or `out_dir` is not free.
    """
    config = config or replace(LABELLED_DEFAULTS)
    if config.loss not in LOSSES:
        raise InvalidInput(f"unknown adapter loss {config.loss!r}; choose one of {', '.join(LOSSES)}")
    pairs = load_labelled_pairs(pairs_path)
    if not pairs:
        raise InvalidInput(f"{pairs_path}: no labelled pairs")
    if "bce" in config.loss and len({p.label > 0 for p in pairs}) < 2:
        raise InvalidInput(f"{pairs_path}: loss {config.loss} needs both labels (0 and 1); try --loss mnrl")
    texts = pair_texts(pairs)
    row = {text: i for i, text in enumerate(texts)}
    rows = [(row[p.query], row[p.document], int(p.label > 0)) for p in pairs if p.query != p.document]
    if "mnrl" in config.loss and not any(y for _, _, y in rows):
        raise InvalidInput(f"{pairs_path}: no query has a positive document; loss {config.loss} needs one")
    out_dir = Path(out_dir)
    tmp = prepare_tmp_dir(out_dir)  # before minutes of embedding: a taken folder fails at once
    try:
        log.info("embedding %d distinct texts with %s", len(texts), base_model)
        vectors = encode_texts(load_model(base_model), texts, progress)
        trained = fit_query_adapter(vectors, rows, config, symmetric)
        QueryAdapter("adapter", str(base_model), trained.weight, trained.bias).save(tmp)
        meta = _meta(pairs_path, base_model, trained, len(pairs), symmetric, vectors.shape[1])
        write_json_atomic(tmp / META_FILE, meta)
        move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def encode_texts(model: Any, texts: list[str], progress: bool) -> np.ndarray:
    """Base vectors of `texts`, in chunks so a progress bar can show how far the embedding is."""
    chunk = 2048
    bar = progress_bar(transient=True) if progress else None
    parts: list[np.ndarray] = []
    if bar is None:
        return encode_normalized(model, texts)
    with bar:
        task = bar.add_task("embedding pair texts", total=len(texts))
        for start in range(0, len(texts), chunk):
            parts.append(encode_normalized(model, texts[start : start + chunk]))
            bar.advance(task, len(parts[-1]))
    return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)


def fit_query_adapter(
    vectors: np.ndarray, rows: list[tuple[int, int, int]], config: AdapterConfig, symmetric: bool = False
) -> AdapterTraining:
    """Train a query adapter on labelled (query row, document row, label) pairs of one vector table.

    Args:
        vectors: Unit-length base vectors; queries and documents are rows of it.
        rows: (query row, document row, 0/1) labelled pairs.
        config: Hyperparameters.
        symmetric: Also train every pair the other way round (duplicate questions have no query side).

    Returns:
        The trained weights and how training went.
    """
    rows = rows + [(d, q, y) for q, d, y in rows] if symmetric else rows
    examples = rotate_negatives(rows)
    return train_adapter(vectors, vectors, examples, np.array(rows, dtype=np.int64), config)


def _meta(
    pairs_path: str | Path, base_model: str, trained: AdapterTraining, n_pairs: int, symmetric: bool, dim: int
) -> dict[str, Any]:
    """Provenance of a stand-alone adapter: base model, data (with a content hash), hyperparameters, training."""
    path = Path(pairs_path)
    return {
        "kind": KIND,
        "base_model": str(base_model),
        "base_model_resolved": resolve_model(base_model),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dimension": int(dim),
        "data": {"file": str(path), "sha256": _sha256(path), "n_pairs": n_pairs, "symmetric": symmetric},
        "hyperparameters": trained.hyperparameters,
        "n_examples": trained.examples,
        "n_pair_rows": trained.pairs,
        "steps": trained.steps,
        "duration_s": trained.duration_s,
        "loss_curve": trained.loss_curve,
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
