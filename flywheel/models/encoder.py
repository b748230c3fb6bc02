"""Encoders: a model version loaded for turning text into normalised vectors, through PyTorch or ONNX Runtime.

Backends (`FLYWHEEL_ENCODER_BACKEND` for queries, `FLYWHEEL_BULK_ENCODER_BACKEND` for corpus encoding):
"auto" (the default: ONNX fp32, exporting the version first if it never was; torch on a CUDA device and where the
export failed),
"torch" (sentence-transformers), "onnx" (ONNX Runtime fp32, the same function) and "onnx-int8" (dynamic
per-channel int8, used only where the accuracy guard passed; see flywheel.models.guard). The ONNX path needs only
onnxruntime, tokenizers and numpy: it never imports torch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flywheel.errors import ConfigError
from flywheel.models.loading import load_model, resolve_device, set_torch_threads
from flywheel.models.onnx import OnnxModel

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.models.registry import ModelVersion, Registry

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")  # what can encode; "auto" picks one of the first two per version


def precision(backend: str) -> str:
    """The numerics a backend's vectors have: "fp32" (torch and onnx compute the same function) or "int8".

    Vectors of the same precision may share a collection; int8 and fp32 vectors never do (see `compatible`).
    """
    return "int8" if backend == "onnx-int8" else "fp32"


def compatible(vectors_backend: str | None, query_backend: str) -> bool:
    """Whether queries encoded by `query_backend` may search vectors made by `vectors_backend`.

    A collection with no record was made before backends existed, i.e. by torch.
    """
    return precision(vectors_backend or "torch") == precision(query_backend)


@dataclass
class Encoder:
    """One model version ready to encode; immutable once built, so it can be swapped as a whole."""

    version: str
    model: object  # SentenceTransformer, or OnnxModel (same encode signature)
    batch_size: int = 64
    backend: str = "torch"  # what actually encodes: one of BACKENDS (after any accuracy-guard fallback)

    @property
    def dimension(self) -> int:
        """Output dimension (after any truncation)."""
        return int(self.model.get_embedding_dimension())

    def encode(self, texts: list[str], progress: bool = False) -> np.ndarray:
        """Encode texts to L2-normalised float32 vectors (cosine = dot product).

        Args:
            texts: the texts.
            progress: show a progress bar (bulk work).

        Returns:
            An array of shape (len(texts), dimension).
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            texts,
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)


def load_encoder(
    registry: Registry, entry: ModelVersion, settings: Settings, backend: str | None = None, bulk: bool = False
) -> Encoder:
    """Load a registry version as an Encoder on a backend, exporting it to ONNX first when needed.

    An "onnx-int8" request falls back to "onnx" (fp32) when the version's accuracy guard did not pass; the
    returned Encoder's `backend` says what actually encodes.

    Args:
        registry: the model registry (exports live beside each version's files).
        entry: the version.
        settings: device, batch size, backends, guard thresholds.
        backend: force a backend; default the query backend, or the bulk backend with `bulk`.
        bulk: pick the corpus-encoding backend (`bulk_encoder_backend`) instead of the query one.

    Returns:
        The Encoder (not yet serving).

    Raises:
        ConfigError: the model cannot be loaded or exported.
    """
    backend = backend or (settings.bulk_backend if bulk else settings.encoder_backend)
    threads = None if bulk else settings.serve_threads  # ONNX: None keeps ONNX Runtime's one per core
    if backend == "auto" and (resolve_device(settings.device) or "").startswith("cuda"):
        backend = "torch"  # a GPU encodes faster through torch than ONNX Runtime's CPU provider
    if backend == "auto":
        folder = auto_export(registry, entry)
        if folder is not None:
            return Encoder(entry.version, OnnxModel(folder, threads=threads), settings.encode_batch_size, "onnx")
        backend = "torch"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}; use auto or one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return torch_encoder(entry.version, load_model(entry.load_path, settings.device), settings, bulk)
    from flywheel.models.guard import ensure_export, verdict

    folder, meta = ensure_export(registry, entry, settings)
    judged = verdict(meta["guard"], settings)  # today's thresholds on the recorded measurement
    if backend == "onnx-int8" and not judged["passed"]:
        log.warning(
            "%s: int8 refused by the accuracy guard (%s); encoding with onnx fp32", entry.version, judged["reason"]
        )
        backend = "onnx"
    model = OnnxModel(folder, int8=backend == "onnx-int8", threads=threads)
    return Encoder(entry.version, model, settings.encode_batch_size, backend)


def torch_encoder(version: str, model: object, settings: Settings, bulk: bool = False) -> Encoder:
    """A loaded SentenceTransformer as an Encoder; a query encoder also sets torch's serving threads
    (fewer than torch's one per core, see `Settings.torch_serving_threads`)."""
    if not bulk:
        set_torch_threads(settings.torch_serving_threads)
    return Encoder(version, model, settings.encode_batch_size)


def auto_export(registry: Registry, entry: ModelVersion) -> Path | None:
    """The "auto" backend's choice for a version: its ONNX export folder (exported now if it never was), or
    None for torch when the export failed, now or before (recorded, so no start tries it again).

    ONNX fp32 computes the same function as torch (the export is checked against it to 1e-4) and encodes a
    query several times faster, so it serves wherever the export works; int8 stays an explicit choice.
    """
    from flywheel.models.export import export_version, failed_export, record_failed_export

    failed = failed_export(registry, entry)
    if failed is not None:
        log.info("%s: serving with torch (its ONNX export failed before: %s)", entry.version, failed["error"])
        return None
    try:
        return export_version(registry, entry)[0]
    except OSError as exc:  # disk full, permissions: worth trying again at the next start
        log.warning("%s: ONNX export failed (%s); serving with torch", entry.version, exc)
    except Exception as exc:  # noqa: BLE001 - any failure to trace or check the graph means torch serves
        log.warning("%s: ONNX export failed (%s); serving with torch, and not trying again", entry.version, exc)
        record_failed_export(registry, entry, exc)
    return None
