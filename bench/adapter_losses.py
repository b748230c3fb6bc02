"""Choose the query adapter's loss, learning rate and epochs: train on cached MiniLM vectors, test on Quora dev.

Training data: the labelled raw pairs of train_pool (duplicates and same-topic non-duplicates), both
directions, as in issue 6's table (which measured 18.1% for a query-side adapter). Each run trains a
query-side linear adapter (flywheel.adapter.train_adapter, documents untouched) and is scored by the seed's
pair error on dev.jsonl.gz (question1 through the adapter, question2 as the document; threshold on half,
grouped by query; paired-bootstrap CI of the change against the base model).

    .venv/bin/python bench/adapter_losses.py "mnrl+bce:1e-3:10,mnrl:1e-3:10,bce:1e-3:10"

Each run is loss:learning_rate:epochs. The base vectors come from the cache bench/compare_losses.py writes
(encoded once if missing). Results are appended to bench/results/adapter_losses.json.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from compare_losses import DATA, CachedEncoder, cached_embeddings, read_jsonl  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "adapter_losses.json"
CACHE = Path(tempfile.gettempdir()) / "flywheel-bench-cache"


def main() -> None:
    from flywheel.formats.pairs import load_labelled_pairs, pair_texts
    from flywheel.learn.query_adapter import AdapterConfig, train_adapter
    from flywheel.models.loading import load_model
    from flywheel.models.query_adapter import QueryAdapter
    from flywheel.scoring.pair_error import compare_scored

    runs = sys.argv[1] if len(sys.argv) > 1 else "mnrl+bce:5e-4:10,mnrl+bce:1e-3:10,mnrl:1e-3:10,bce:1e-3:10"
    base = CachedEncoder(load_model("all-MiniLM-L6-v2", device="cpu"))
    raw = [r for r in read_jsonl(DATA / "train_pool.jsonl.gz") if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    texts: dict[str, str] = {}
    for r in raw:
        texts.setdefault(r["qkey1"], r["question1"])
        texts.setdefault(r["qkey2"], r["question2"])
    row = {k: i for i, k in enumerate(texts)}
    emb = cached_embeddings(base, list(texts.values()), CACHE)
    dev = load_labelled_pairs(DATA / "dev.jsonl.gz")
    dev_texts = pair_texts(dev)
    dev_emb = cached_embeddings(base, dev_texts, CACHE)
    dev_row = {t: i for i, t in enumerate(dev_texts)}
    dq, dd = (dev_emb[[dev_row[getattr(p, side)] for p in dev]] for side in ("query", "document"))

    pairs = []
    for r in raw:
        a, b, y = row[r["qkey1"]], row[r["qkey2"]], int(r["is_duplicate"])
        pairs += [(a, b, y), (b, a, y)]
    positives: dict[int, list[int]] = {}
    negatives: dict[int, list[int]] = {}
    for a, b, y in pairs:
        (positives if y else negatives).setdefault(a, []).append(b)
    examples = [
        (a, d, negatives.get(a, [-1])[i % len(negatives.get(a, [-1]))])
        for a, docs in positives.items()
        for i, d in enumerate(docs)
    ]
    results = json.loads(OUT.read_text()) if OUT.exists() else []
    for spec in runs.split(","):
        loss, lr, epochs = spec.split(":")
        config = AdapterConfig(loss=loss, learning_rate=float(lr), epochs=int(epochs))
        trained = train_adapter(emb, emb, np.array(examples), np.array(pairs), config)
        adapter = QueryAdapter("x", "base", trained.weight, trained.bias)
        out = compare_scored(dev, (dq * dd).sum(1), (adapter.apply(dq) * dd).sum(1), seed=0)
        line = {
            "loss": loss,
            "learning_rate": float(lr),
            "epochs": int(epochs),
            "train_pairs": len(pairs),
            "train_s": trained.duration_s,
            "dev_error_base": out["incumbent"]["error_rate"],
            "dev_error": out["candidate"]["error_rate"],
            "dev_error_ci95": out["candidate"]["ci95"],
            "delta_ci95": out["delta_ci95"],
            "machine": "2 shared CPU cores (busy), 1 torch thread",
        }
        print(json.dumps(line), flush=True)
        results.append(line)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
