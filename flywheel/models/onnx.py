"""An exported encoder run by ONNX Runtime (no torch on this path)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


class OnnxModel:
    """An exported encoder run by ONNX Runtime: tokenizer + graph (pooling and normalisation are inside it).

    `encode` takes SentenceTransformer.encode's arguments, so evaluation code works with either model.
    """

    def __init__(self, folder: Path, int8: bool = False, threads: int | None = None) -> None:
        """Args: folder: an export folder (see flywheel.models.export); int8: load the quantized graph; threads:
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
