"""One backend's bare single-query encode time, alone in a fresh process (supplement to bench/backends.py).

    .venv/bin/python bench/encoder_alone.py torch [THREADS] | onnx EXPORT_DIR | onnx-int8 EXPORT_DIR

On 2 shared cores, torch with its default 2 threads measured ~35x slower than with 1 thread (OpenMP threads
waiting for each other while other jobs hold the cores); pass THREADS=1 to see the encoder itself.
"""

import gzip
import json
import sys
import time
from pathlib import Path

import numpy as np

backend = sys.argv[1]
ROOT = Path(__file__).resolve().parent.parent
QUERIES = ROOT / "flywheel" / "data" / "quora" / "dev_retrieval" / "queries.jsonl.gz"
with gzip.open(QUERIES, "rt") as fh:
    qs = [json.loads(line)["text"] for line in fh][:170]
if backend == "torch":
    import torch
    from sentence_transformers import SentenceTransformer

    from flywheel.util.packaged import packaged_model_path

    torch.set_num_threads(int(sys.argv[2]) if len(sys.argv) > 2 else torch.get_num_threads())
    print("threads", torch.get_num_threads())
    m = SentenceTransformer(packaged_model_path(), device="cpu")

    def enc(q):
        return m.encode([q], normalize_embeddings=True)
else:
    from flywheel.models.onnx import OnnxModel

    m = OnnxModel(Path(sys.argv[2]), int8=backend == "onnx-int8")

    def enc(q):
        return m.encode([q])


for q in qs[:20]:
    enc(q)
t = []
for q in qs[20:]:
    t0 = time.perf_counter()
    enc(q)
    t.append((time.perf_counter() - t0) * 1000)
print(backend, f"p50 {np.percentile(t, 50):.2f} ms p95 {np.percentile(t, 95):.2f}")
