"""Export a model version to ONNX (fp32 and int8 per-channel) beside its weights, with provenance.

Layout, inside the version's folder (for the base model loaded by name, the registry's `v1/` folder)::

    <version>/onnx/model.onnx        fp32 graph: transformer + pooling (+ dense) + L2 normalisation
    <version>/onnx/model_int8.onnx   the same, weights quantized to int8 per output channel
    <version>/onnx/tokenizer.json    the tokenizer with the model's truncation and padding built in
    <version>/onnx/export.json       provenance: source version, opset, quantization, parity, accuracy guard

`sentence-transformers[onnx]` cannot be installed next to sentence-transformers 6.x (optimum pins an older
transformers), so the graph is traced directly with `torch.onnx.export` and quantized with
`onnxruntime.quantization.quantize_dynamic`. Serving then needs only onnxruntime and tokenizers.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from flywheel.errors import ConfigError, NotFound
from flywheel.models.loading import load_model
from flywheel.models.onnx import OnnxModel
from flywheel.models.registry import ModelVersion, Registry
from flywheel.util.files import now_iso, read_json, write_json_atomic

log = logging.getLogger(__name__)

ONNX_DIR = "onnx"
META_FILE = "export.json"
FAILED_FILE = "onnx-failed.json"  # beside a version's files: its export failed, so "auto" serves it with torch
FILES = {"fp32": "model.onnx", "int8": "model_int8.onnx", "tokenizer": "tokenizer.json"}
OPSET = 17
# Per-channel int8 weights of the MatMuls only. The quantizer's per-tensor default lost ~0.7 pt of pair error
# on Quora; also quantizing the embedding tables (Gather, per-tensor uint8) measured +0.66 pt vs fp32 on the
# shipped dev pairs against +0.53 pt for MatMul-only, for no speed gain (a lookup is not a matmul).
QUANTIZATION = {
    "method": "onnxruntime.quantization.quantize_dynamic",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,
    "op_types_to_quantize": ["MatMul"],
}
# fp32 ONNX must compute the same function as PyTorch: it shares collections with torch vectors.
PARITY_MAX_ABS = 1e-4
PROBE_TEXTS = [
    "How do I learn Python quickly?",
    "what is the best way to cook pasta",
    "x",
    "Why is the sky blue? " * 60,  # longer than any max_seq_length: exercises truncation
    "Où est la gare ? ¿Dónde está? 東京",
    "",
]


def source_entry(registry: Registry, entry: ModelVersion) -> ModelVersion:
    """The version whose weights an export holds: the version itself, or for an adapter the base under it."""
    seen = set()
    while entry.kind == "adapter" and entry.parent and entry.parent not in seen:
        seen.add(entry.version)
        entry = registry.get(entry.parent)
    return entry


def export_folder(registry: Registry, entry: ModelVersion) -> Path:
    """Where a version's export lives (`<version>/onnx`, of the base version for an adapter)."""
    return source_entry(registry, entry).path / ONNX_DIR


def read_export(folder: Path) -> dict[str, Any] | None:
    """The export.json of a complete export folder, or None when there is none."""
    meta_file = folder / META_FILE
    if not meta_file.exists():
        return None
    meta = read_json(meta_file)
    if not all((folder / name).exists() for name in meta.get("files", {}).values()):
        return None
    return meta


def write_export_meta(folder: Path, meta: dict[str, Any]) -> None:
    """Rewrite an export's export.json atomically (e.g. to record a new accuracy-guard verdict)."""
    write_json_atomic(folder / META_FILE, meta)


def export_version(registry: Registry, entry: ModelVersion, force: bool = False) -> tuple[Path, dict[str, Any]]:
    """Export a registry version (or the base under an adapter) to ONNX fp32 + int8, unless already done.

    Args:
        registry: the model registry.
        entry: the version to export.
        force: export again even when a complete export exists.

    Returns:
        (export folder, export meta).

    Raises:
        NotFound: the version's weights were discarded or pruned.
        ConfigError: the model cannot be exported faithfully (the message says why).
    """
    source = source_entry(registry, entry)
    if source.status in ("rejected", "failed", "pruned") and source.kind != "base":
        raise NotFound(f"{source.version} has no weights to export (status {source.status})")
    folder = source.path / ONNX_DIR
    existing = read_export(folder)
    if existing is not None and not force:
        return folder, existing
    meta = export_model(source.load_path, folder, {"version": source.version, "kind": source.kind})
    (source.path / FAILED_FILE).unlink(missing_ok=True)  # a forced retry that worked clears the record
    return folder, meta


def failed_export(registry: Registry, entry: ModelVersion) -> dict[str, Any] | None:
    """The record of a version's failed ONNX export (the weights an export would hold), or None."""
    path = source_entry(registry, entry).path / FAILED_FILE
    return read_json(path) if path.exists() else None


def record_failed_export(registry: Registry, entry: ModelVersion, error: BaseException) -> None:
    """Remember that a version cannot be exported, so the "auto" backend serves it with torch without trying
    again at every start (`flywheel export VERSION --force` tries again and clears the record)."""
    source = source_entry(registry, entry)
    record = {"version": source.version, "error": f"{type(error).__name__}: {error}", "at": now_iso()}
    write_json_atomic(source.path / FAILED_FILE, {**record, "versions": _library_versions()})


def export_model(load_path: str, folder: Path, source: dict[str, Any], opset: int = OPSET) -> dict[str, Any]:
    """Trace a sentence-transformers model to ONNX, quantize it, and write the folder in one rename.

    The files are built in a sibling temporary folder and moved into place only when complete and checked,
    so a crash never leaves half an export that a server would load.

    Args:
        load_path: what SentenceTransformer(...) loads (folder or name).
        folder: the export folder to create or replace.
        source: provenance of the weights (version, kind).
        opset: ONNX opset.

    Returns:
        The export meta written to export.json.

    Raises:
        ConfigError: the model cannot be loaded, traced, or its fp32 graph disagrees with PyTorch.
    """
    started = time.monotonic()
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        model = load_model(load_path, "cpu")
        dimension = int(model.get_embedding_dimension())
        inputs = _trace(model, tmp / FILES["fp32"], opset)
        _save_tokenizer(model, tmp / FILES["tokenizer"])
        _quantize(tmp / FILES["fp32"], tmp / FILES["int8"])
        meta: dict[str, Any] = {
            "source_version": source.get("version"),
            "source_kind": source.get("kind"),
            "source_model": load_path,
            "created_at": now_iso(),
            "opset": opset,
            "exporter": "torch.onnx.export (TorchScript)",
            "inputs": inputs,
            "dimension": dimension,
            "max_seq_length": int(model.max_seq_length),
            "files": dict(FILES),
            "quantization": dict(QUANTIZATION),
            "versions": _library_versions(),
        }
        write_json_atomic(tmp / META_FILE, meta)
        reference = model.encode(PROBE_TEXTS, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
        meta["parity"] = {
            name: _parity(reference, OnnxModel(tmp, int8=name == "int8").encode(PROBE_TEXTS))
            for name in ("fp32", "int8")
        }
        meta["parity"]["probe_texts"] = len(PROBE_TEXTS)
        if meta["parity"]["fp32"]["max_abs_diff"] > PARITY_MAX_ABS:
            raise ConfigError(
                f"cannot export {load_path}: the ONNX graph differs from PyTorch by "
                f"{meta['parity']['fp32']['max_abs_diff']:.2e} (> {PARITY_MAX_ABS}); a module of this model "
                "is not traced faithfully: serve it with FLYWHEEL_ENCODER_BACKEND=torch"
            )
        meta["duration_s"] = round(time.monotonic() - started, 2)
        write_json_atomic(tmp / META_FILE, meta)
        _replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s to %s in %.1f s", source.get("version"), folder, meta["duration_s"])
    return meta


def _trace(model: Any, path: Path, opset: int) -> list[str]:
    """Trace model + truncation + L2 normalisation with dynamic batch and sequence axes; return input names."""
    import torch

    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in model.tokenizer.model_input_names]
    if "attention_mask" not in names:
        names.insert(1, "attention_mask")

    class Graph(torch.nn.Module):
        """The whole sentence-transformers pipeline, then the Matryoshka cut and normalisation encode() does."""

        def __init__(self) -> None:
            super().__init__()
            self.st = model

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            emb = self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]
            if model.truncate_dim:
                emb = emb[:, : model.truncate_dim]
            return torch.nn.functional.normalize(emb, p=2, dim=1)

    sample = model.tokenizer(["a short one", "and a somewhat longer sample text"], padding=True, return_tensors="pt")
    args = tuple(sample[n] if n in sample else torch.zeros_like(sample["input_ids"]) for n in names)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
    axes["embedding"] = {0: "batch"}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
            torch.onnx.export(
                Graph().eval(),
                args,
                str(path),
                dynamo=False,
                opset_version=opset,
                input_names=names,
                output_names=["embedding"],
                dynamic_axes=axes,
            )
    except Exception as exc:  # the exporter raises many types; one readable line for the caller
        raise ConfigError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    return names


def _save_tokenizer(model: Any, path: Path) -> None:
    """Save the fast tokenizer with the model's truncation and padding, so serving needs no transformers."""
    from tokenizers import Tokenizer

    hf = model.tokenizer
    backend = getattr(hf, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError("ONNX export needs a fast (Rust) tokenizer; this model has a slow one")
    tok = Tokenizer.from_str(backend.to_str())
    tok.enable_truncation(max_length=int(model.max_seq_length))
    tok.enable_padding(pad_id=int(hf.pad_token_id or 0), pad_token=hf.pad_token or "[PAD]")
    tok.save(str(path))


def _quantize(fp32: Path, int8: Path) -> None:
    """Dynamic int8 quantization of the weights, per output channel (activations stay dynamic)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # its "consider pre-processing" note goes to the root logger
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                str(fp32),
                str(int8),
                weight_type=QuantType.QInt8,
                per_channel=QUANTIZATION["per_channel"],
                reduce_range=QUANTIZATION["reduce_range"],
                op_types_to_quantize=QUANTIZATION["op_types_to_quantize"],
            )
    finally:
        logging.disable(previous)


def _parity(reference: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """How far ONNX vectors are from PyTorch's: max absolute difference and min/mean cosine."""
    cosine = np.einsum("ij,ij->i", reference, got)
    return {
        "max_abs_diff": float(np.abs(reference - got).max()),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
    }


def _replace_dir(tmp: Path, folder: Path) -> None:
    """Move a finished export into place, replacing an older one (old moved aside first, then deleted)."""
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "onnx", "onnxruntime", "sentence-transformers", "transformers", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


__all__ = [
    "FAILED_FILE",
    "FILES",
    "META_FILE",
    "ONNX_DIR",
    "export_folder",
    "export_model",
    "export_version",
    "failed_export",
    "read_export",
    "record_failed_export",
]
