"""Encoders: a model version loaded for turning text into normalised vectors, through PyTorch or ONNX Runtime.

Backends (`FLYWHEEL_ENCODER_BACKEND` for queries, `FLYWHEEL_BULK_ENCODER_BACKEND` for corpus encoding):
"torch" (sentence-transformers), "onnx" (ONNX Runtime fp32, the same function) and "onnx-int8" (dynamic
per-channel int8, used only where the accuracy guard passed; see flywheel.guard). The ONNX path needs only
onnxruntime, tokenizers and numpy: it never imports torch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flywheel.errors import ConfigError

if TYPE_CHECKING:
    from flywheel.config import Settings
    from flywheel.registry import ModelVersion, Registry

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "onnx-int8")


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


def resolve_device(device: str = "auto") -> str:
    """Pick the torch device: CUDA when present for "auto", else what was asked."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(name_or_path: str, device: str = "auto"):  # -> SentenceTransformer (import is slow)
    """Load a sentence-transformers model by hub name or local path.

    Args:
        name_or_path: e.g. "BAAI/bge-base-en-v1.5" (needs the hub or its cache) or a folder.
        device: "auto", "cpu", "cuda", ...

    Returns:
        The SentenceTransformer in eval mode.

    Raises:
        ConfigError: the model cannot be loaded; the message says which and why.
    """
    from flywheel.errors import InvalidInput
    from flywheel.evaluate import load_model as load_any  # the one loader (it knows the packaged model's names)

    try:
        model = load_any(name_or_path, device=resolve_device(device))
    except InvalidInput as exc:  # for a server, a model that does not load is a configuration error
        raise ConfigError(f"{exc}. Give a local folder, or a hub name with network access or a warm HF cache.") from exc
    model.eval()
    return model


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


class OnnxModel:
    """An exported encoder run by ONNX Runtime: tokenizer + graph (pooling and normalisation are inside it).

    `encode` takes SentenceTransformer.encode's arguments, so evaluation code works with either model.
    """

    def __init__(self, folder: Path, int8: bool = False, threads: int | None = None) -> None:
        """Args: folder: an export folder (see flywheel.export); int8: load the quantized graph; threads:
        ONNX Runtime intra-op threads (None: its default, one per physical core)."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        self.folder = folder
        self.file = folder / (meta["files"]["int8"] if int8 else meta["files"]["fp32"])
        self.dimension = int(meta["dimension"])
        self.tokenizer = Tokenizer.from_file(str(folder / meta["files"]["tokenizer"]))
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(self.file), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def get_embedding_dimension(self) -> int:
        """Output dimension."""
        return self.dimension

    def encode(
        self,
        sentences: list[str] | str,
        batch_size: int = 64,
        show_progress_bar: bool = False,
        **_: Any,
    ) -> np.ndarray:
        """Encode texts to L2-normalised float32 rows (the graph normalises; other ST flags are accepted).

        Texts are sorted by length so each batch pads little, then put back in order.
        """
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        if show_progress_bar:
            from tqdm import tqdm

            starts = tqdm(starts, desc="encoding (onnx)")
        for start in starts:
            rows = order[start : start + batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def _run(self, texts: list[str]) -> np.ndarray:
        encodings = self.tokenizer.encode_batch(texts)
        columns = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
        }
        feeds = {name: np.asarray(columns[name], dtype=np.int64) for name in self.inputs}
        return self.session.run(None, feeds)[0]


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
    if backend not in BACKENDS:
        raise ConfigError(f"unknown encoder backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "torch":
        return Encoder(entry.version, load_model(entry.load_path, settings.device), settings.encode_batch_size)
    from flywheel.guard import ensure_export, verdict

    folder, meta = ensure_export(registry, entry, settings)
    judged = verdict(meta["guard"], settings)  # today's thresholds on the recorded measurement
    if backend == "onnx-int8" and not judged["passed"]:
        log.warning(
            "%s: int8 refused by the accuracy guard (%s); encoding with onnx fp32", entry.version, judged["reason"]
        )
        backend = "onnx"
    model = OnnxModel(folder, int8=backend == "onnx-int8")
    return Encoder(entry.version, model, settings.encode_batch_size, backend)
