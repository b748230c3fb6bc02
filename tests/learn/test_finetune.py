"""Fine-tuning a tiny BERT: files, meta.json, stopping, determinism, Matryoshka, the Dense adapter, files in."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from flywheel.errors import InvalidInput
from flywheel.learn.finetune import TrainConfig, TrainResult, train_from_file, train_model
from flywheel.types import LabelledPair
from tests.helpers.factories import TRAIN_OTHERS, TRAIN_TOPICS, make_training_examples

os.environ.setdefault("HF_HUB_OFFLINE", "1")
META_KEYS = {
    "kind",
    "base_model",
    "created_at",
    "dimension",
    "hyperparameters",
    "n_examples",
    "n_with_negatives",
    "device",
    "duration_s",
    "steps",
    "stopped_early",
    "stop_reason",
    "loss_curve",
}


def weights(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as numpy arrays."""
    from safetensors.numpy import load_file

    return load_file(str(path))


def same_weights(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    """True when two state dicts have the same keys and bit-identical tensors."""
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_training_changes_weights_and_writes_model_and_meta(tiny: str, tmp_path: Path) -> None:
    """A few steps move the weights; out_dir holds only the model and meta.json; the loss curve is logged."""
    out = tmp_path / "models" / "v1"
    result = train_model(tiny, make_training_examples(), out, TrainConfig(batch_size=8, max_steps=5), progress=False)
    assert isinstance(result, TrainResult) and result.model_dir == str(out)
    assert not same_weights(weights(Path(tiny) / "model.safetensors"), weights(out / "model.safetensors"))
    meta = json.loads((out / "meta.json").read_text())
    assert set(meta) >= META_KEYS and meta["kind"] == "finetune" and meta["base_model"] == tiny
    assert meta["steps"] == result.steps == 5
    assert meta["stopped_early"] is True and meta["stop_reason"] == "max_steps"
    assert meta["n_examples"] == 48 and meta["n_with_negatives"] == 40 and meta["dimension"] == 32
    assert meta["hyperparameters"]["max_steps"] == 5 and meta["device"] == "cpu"
    assert [step for step, _ in meta["loss_curve"]] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(loss) for _, loss in meta["loss_curve"])
    assert meta["created_at"].endswith("+00:00")
    # Every skip reaches the ranking loss as a triplet; searches without skips train as pairs.
    assert meta["n_rows"]["triplets"] == 80 and meta["n_rows"]["pairs"] == 8
    names = {p.name for p in out.iterdir()}
    assert {"meta.json", "model.safetensors", "modules.json", "1_Pooling", "2_Normalize"} <= names
    assert not [n for n in names if n.startswith((".", "checkpoint", "runs", "trainer_", "training_args"))]
    assert [p.name for p in out.parent.iterdir()] == ["v1"]  # no temp dir left beside it
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out), device="cpu").encode(["how do i cook pasta"]).shape == (1, 32)


def test_full_run_logs_about_25_loss_points_and_is_not_early(tiny: str, tmp_path: Path) -> None:
    """Without caps a run covers the epoch; logging_steps gives a curve of ~20+ points when steps allow."""
    examples = make_training_examples(120)
    result = train_model(tiny, examples, tmp_path / "m", TrainConfig(batch_size=4, loss="mnrl"), progress=False)
    assert result.stopped_early is False and result.stop_reason is None
    assert result.steps >= 50
    assert 20 <= len(result.loss_curve) <= 60


def test_same_seed_gives_identical_weights(tiny: str, tmp_path: Path) -> None:
    """Seeded runs on CPU are reproducible bit for bit; another seed gives other weights."""
    config = TrainConfig(batch_size=8, max_steps=4, loss="mnrl+contrastive")
    runs = [train_model(tiny, make_training_examples(), tmp_path / name, config, progress=False) for name in ("a", "b")]
    other = TrainConfig(batch_size=8, max_steps=4, loss="mnrl+contrastive", seed=7)
    train_model(tiny, make_training_examples(), tmp_path / "c", other, progress=False)
    a, b, c = (weights(tmp_path / name / "model.safetensors") for name in ("a", "b", "c"))
    assert same_weights(a, b)
    assert not same_weights(a, c)
    assert runs[0].loss_curve == runs[1].loss_curve


def test_max_minutes_stops_early_and_still_saves(tiny: str, tmp_path: Path) -> None:
    """A spent wall-clock budget stops training at the next step boundary; the model is saved."""
    config = TrainConfig(batch_size=4, max_minutes=1e-4, loss="contrastive")
    result = train_model(tiny, make_training_examples(200), tmp_path / "m", config, progress=False)
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert result.stopped_early and result.stop_reason == "max_minutes" == meta["stop_reason"]
    assert 1 <= result.steps < meta["planned_steps"]
    assert (tmp_path / "m" / "model.safetensors").is_file()


def test_dim_trains_matryoshka_and_saves_truncated_model(tiny: str, tmp_path: Path) -> None:
    """With dim=16 the saved model reports and outputs 16-dimensional, unit-length embeddings."""
    from sentence_transformers import SentenceTransformer

    result = train_model(
        tiny, make_training_examples(), tmp_path / "m", TrainConfig(batch_size=8, max_steps=3, dim=16), progress=False
    )
    assert result.dimension == 16
    model = SentenceTransformer(str(tmp_path / "m"), device="cpu")
    emb = model.encode(["how do i cook pasta", "best way to fix car"], normalize_embeddings=True)
    assert emb.shape == (2, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with pytest.raises(InvalidInput, match="dim 32 must be smaller"):
        train_model(tiny, make_training_examples(), tmp_path / "n", TrainConfig(dim=32), progress=False)


def test_adapter_trains_only_the_dense_layer(tiny: str, tmp_path: Path) -> None:
    """Adapter mode keeps the transformer bit-identical and moves the identity-initialised Dense layer."""
    out = tmp_path / "m"
    result = train_model(
        tiny, make_training_examples(), out, TrainConfig(batch_size=8, max_steps=4, frozen_dense=True), progress=False
    )
    assert result.hyperparameters["learning_rate"] == 1e-3
    assert same_weights(weights(Path(tiny) / "model.safetensors"), weights(out / "model.safetensors"))
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((out / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Dense", "Normalize"]
    dense = weights(next(out.glob("2_Dense")) / "model.safetensors")
    weight = dense["linear.weight"]
    assert weight.shape == (32, 32) and not np.array_equal(weight, np.eye(32, dtype=weight.dtype))
    assert np.abs(weight - np.eye(32)).max() < 0.5  # still close to the identity it started from


def test_contrastive_uses_extra_labelled_pairs_and_train_from_file(tiny: str, tmp_path: Path) -> None:
    """Labelled pairs feed the contrastive term (negatives-only queries too); files train end to end."""
    pairs = [
        LabelledPair(f"why {t} {i}", f"how to {o} {i}", 0)
        for i, (t, o) in enumerate(zip(TRAIN_TOPICS, TRAIN_OTHERS, strict=True))
    ]
    result = train_model(
        tiny,
        make_training_examples(14),
        tmp_path / "a",
        TrainConfig(loss="contrastive", max_steps=2),
        progress=False,
        pairs=pairs,
    )
    assert result.n_pairs == 7 and result.n_rows == {"labelled": 14 + 24 + 7}
    rows = [{"question1": e.query, "question2": e.positive, "is_duplicate": 1} for e in make_training_examples(20)]
    rows += [
        {"question1": e.query, "question2": n, "is_duplicate": 0}
        for e in make_training_examples(20)
        for n in e.negatives
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from_file = train_from_file(path, tmp_path / "b", base_model=tiny, config=TrainConfig(max_steps=2, batch_size=8))
    assert from_file.n_examples == 20 and from_file.n_with_negatives == 17 and from_file.steps == 2
    with pytest.raises(InvalidInput, match="already exists and is not empty"):
        train_from_file(path, tmp_path / "b", base_model=tiny, config=TrainConfig(max_steps=1))
    with pytest.raises(InvalidInput, match="unknown loss"):
        train_model(tiny, make_training_examples(), tmp_path / "c", TrainConfig(loss="bogus"), progress=False)  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "pairs.jsonl"]


def test_training_sets_torch_threads_for_its_duration_only(
    tiny: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import Trainer

    seen: list[int] = []
    real_train = Trainer.train

    def train(self: Trainer, *args: object, **kwargs: object) -> object:
        seen.append(torch.get_num_threads())
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "train", train)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what a serving process on two cores has
    try:
        config = TrainConfig(batch_size=8, max_steps=2, threads=2)
        train_model(tiny, make_training_examples(), tmp_path / "m", config, progress=False)
        assert seen == [2] and torch.get_num_threads() == 1
        assert json.loads((tmp_path / "m" / "meta.json").read_text())["torch_threads"] == 2
    finally:
        torch.set_num_threads(before)
