"""Compare fine-tuning losses on Quora: which use of clicks and skips lowers the seed's pair error most.

Simulated flywheel data from train_pool (raw rows only): each duplicate pair is a search whose query is
question1 and whose click is question2; the skip is the result the base model ranks highest among all
train_pool questions that is not a known duplicate of the query (a Quora-labelled non-duplicate partner
is preferred when one exists). Every loss sees the same examples. The *_labelled runs train on 4,000
human-labelled raw pairs instead (duplicates and same-topic non-duplicates, as in the issue): there
the negatives are human judgments, like real skips, but most of them have no positive for their query.

Evaluation: pair error on dev.jsonl.gz (threshold fitted on half, grouped by query, tested on the other
half; same split for all), paired-bootstrap CI of the change against the base model, and retrieval
metrics on dev_retrieval. Usage (about 40 minutes on 2 idle CPU cores):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/compare_losses.py [--runs mnrl_hardneg,contrastive]
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from flywheel.formats.pairs import load_labelled_pairs
from flywheel.learn.finetune import TrainConfig, train_model  # noqa: E402
from flywheel.models.loading import load_model
from flywheel.scoring.pair_error import compare_pair_error, encode_normalized  # noqa: E402
from flywheel.scoring.ranking import compare_retrieval  # noqa: E402
from flywheel.types import LabelledPair, TrainingExample  # noqa: E402

DATA = Path("/work/shared/data/quora_duplicate_questions")
RESULTS = Path(__file__).resolve().parent / "results"
# name -> (TrainConfig overrides, data: "sim" = simulated clicks+skips, "labelled" = human-labelled pairs)
RUNS: dict[str, tuple[dict[str, Any], str]] = {
    "mnrl_inbatch": ({"loss": "mnrl", "max_negatives": 0}, "sim"),
    "mnrl_hardneg": ({"loss": "mnrl"}, "sim"),
    "contrastive": ({"loss": "contrastive"}, "sim"),
    "mnrl+contrastive": ({"loss": "mnrl+contrastive"}, "sim"),
    "contrastive_labelled": ({"loss": "contrastive"}, "labelled"),
    "mnrl+contrastive_labelled": ({"loss": "mnrl+contrastive"}, "labelled"),
}


class CachedEncoder:
    """Wraps a model so the base model's embeddings are computed once for all comparisons."""

    def __init__(self, model: Any) -> None:
        """Keep the model and an empty text -> vector cache."""
        self.model = model
        self.cache: dict[str, np.ndarray] = {}

    def encode(self, sentences: list[str], **kwargs: Any) -> np.ndarray:
        """Encode only texts not seen before; the flags are the same for every call in this script."""
        missing = [s for s in dict.fromkeys(sentences) if s not in self.cache]
        if missing:
            self.cache.update(zip(missing, encode_normalized(self.model, missing), strict=True))
        return np.stack([self.cache[s] for s in sentences])


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Read a (gzipped) JSONL file."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def duplicate_clusters(rows: list[dict[str, Any]]) -> dict[str, str]:
    """Union-find over is_duplicate=1 edges: question key -> cluster root (to avoid false-negative skips)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        """Root of x with path halving."""
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for r in rows:
        find(r["qkey1"]), find(r["qkey2"])
        if r["is_duplicate"]:
            parent[find(r["qkey1"])] = find(r["qkey2"])
    return {k: find(k) for k in parent}


def cached_embeddings(base: CachedEncoder, texts: list[str], cache_dir: Path) -> np.ndarray:
    """Base-model embeddings of the mining corpus, cached on disk (encoding 30k questions takes minutes)."""
    digest = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    path = cache_dir / f"minilm-{digest}.npy"
    if path.exists():
        return np.load(path)
    emb = base.encode(texts)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, emb)
    return emb


def simulate_examples(
    base: CachedEncoder, rows: list[dict[str, Any]], n: int, seed: int, cache_dir: Path
) -> list[TrainingExample]:
    """n (query, click, skip) examples: the skip is the top-ranked non-duplicate the base model shows."""
    raw = [r for r in rows if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    cluster = duplicate_clusters(rows)
    labelled_neg: dict[str, list[str]] = {}
    for r in raw:
        if not r["is_duplicate"]:
            labelled_neg.setdefault(r["qkey1"], []).append(r["question2"])
    texts: dict[str, str] = {}
    for r in raw:
        texts.setdefault(r["qkey1"], r["question1"])
        texts.setdefault(r["qkey2"], r["question2"])
    keys = list(texts)
    dups = [r for r in raw if r["is_duplicate"]]
    random.Random(seed).shuffle(dups)
    dups = dups[:n]
    print(f"mining skips for {len(dups)} queries over {len(keys)} train_pool questions ...", flush=True)
    corpus = cached_embeddings(base, [texts[k] for k in keys], cache_dir)
    queries = corpus[[keys.index(r["qkey1"]) for r in dups]]
    scores = queries @ corpus.T
    top = np.argpartition(-scores, 50, axis=1)[:, :50]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1), axis=1)
    examples = []
    for r, cand in zip(dups, top, strict=True):
        if labelled_neg.get(r["qkey1"]):
            skip = labelled_neg[r["qkey1"]][0]
        else:
            own = cluster[r["qkey1"]]
            skip = next((texts[keys[j]] for j in cand if cluster.get(keys[j], keys[j]) != own), "")
        examples.append(TrainingExample(r["question1"], r["question2"], (skip,) if skip else ()))
    return examples


def labelled_pairs(rows: list[dict[str, Any]], n: int, seed: int) -> list[LabelledPair]:
    """n random raw labelled pairs (duplicates and same-topic non-duplicates), as in the issue."""
    raw = [r for r in rows if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    random.Random(seed).shuffle(raw)
    return [LabelledPair(r["question1"], r["question2"], int(r["is_duplicate"])) for r in raw[:n]]


def load_retrieval(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """BEIR-style queries, corpus and qrels of dev_retrieval."""
    queries = {q["_id"]: q["text"] for q in read_jsonl(folder / "queries.jsonl")}
    corpus = {d["_id"]: d["text"] for d in read_jsonl(folder / "corpus.jsonl.gz")}
    relevant: dict[str, set[str]] = {}
    for line in (folder / "qrels.tsv").read_text().splitlines()[1:]:
        qid, did, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(qid, set()).add(did)
    return queries, corpus, relevant


def main() -> None:
    """Run the selected trainings one after another and write the table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + ", ".join(RUNS))
    parser.add_argument("--n-examples", type=int, default=3000, help="simulated searches (click + skip)")
    parser.add_argument("--n-labelled", type=int, default=4000, help="pairs for the *_labelled runs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS / "compare_losses.json")
    cache = Path(tempfile.gettempdir()) / "flywheel-bench-cache"
    parser.add_argument("--cache-dir", type=Path, default=cache, help="base-model embeddings of the pool")
    parser.add_argument("--max-steps", type=int, default=None, help="cap steps (smoke tests)")
    parser.add_argument("--dev-limit", type=int, default=None, help="first N dev pairs only (smoke tests)")
    parser.add_argument("--append", action="store_true", help="keep the runs already in --out")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    base_model = load_model("all-MiniLM-L6-v2", device="cpu")
    base = CachedEncoder(base_model)
    rows = read_jsonl(args.data / "train_pool.jsonl.gz")
    dev = load_labelled_pairs(args.data / "dev.jsonl.gz")
    retrieval = load_retrieval(args.data / "dev_retrieval")
    if args.dev_limit:
        dev = dev[: args.dev_limit]
        retrieval = (dict(list(retrieval[0].items())[: args.dev_limit // 10]), *retrieval[1:])
    sim = simulate_examples(base, rows, args.n_examples, args.seed, args.cache_dir)
    labelled = labelled_pairs(rows, args.n_labelled, args.seed)
    report: dict[str, Any] = {
        "setup": {
            "base_model": "all-MiniLM-L6-v2 (packaged)",
            "sim_examples": len(sim),
            "sim_with_skip": sum(1 for ex in sim if ex.negatives),
            "labelled_pairs": len(labelled),
            "labelled_positive": sum(p.label for p in labelled),
            "dev_pairs": len(dev),
            "eval": "dev.jsonl.gz, threshold on half (grouped by query), error on the other half; 1000 boots",
            "threads": args.threads,
        },
        "runs": {},
    }
    if args.append and args.out.exists():
        report["runs"] = json.loads(args.out.read_text())["runs"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="flywheel-bench-"))
    try:
        for name in [r for r in args.runs.split(",") if r]:
            overrides, data = RUNS[name]
            config = TrainConfig(**overrides, max_steps=args.max_steps)
            print(f"\n=== {name}: {overrides} on {data} data", flush=True)
            result = train_model(
                "all-MiniLM-L6-v2",
                sim if data == "sim" else [],
                work / name,
                config,
                progress=False,
                pairs=labelled if data == "labelled" else (),
            )
            started = time.monotonic()
            candidate = load_model(work / name, device="cpu")
            pair = compare_pair_error(base, candidate, dev, seed=args.seed)
            retr = compare_retrieval(base, candidate, *retrieval, seed=args.seed)
            report["runs"][name] = {
                "config": result.hyperparameters,
                "data": data,
                "train_s": result.duration_s,
                "steps": result.steps,
                "rows": result.to_dict().get("n_rows"),
                "eval_s": round(time.monotonic() - started, 1),
                "pair_error": pair,
                "retrieval": retr,
                "loss_curve": result.loss_curve,
            }
            args.out.write_text(json.dumps(report, indent=2) + "\n")
            print_table(report)
            shutil.rmtree(work / name, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(report: dict[str, Any]) -> None:
    """Print one line per run: error with CI, paired delta with CI, relative reduction, MRR@10, time."""
    runs = report["runs"]
    if not runs:
        return
    first = next(iter(runs.values()))
    base_err = first["pair_error"]["incumbent"]
    base_mrr = first["retrieval"]["incumbent"]["mrr@10"]
    print(
        f"\n{'run':22} {'error':>7} {'95% CI':>15} {'delta vs base [95% CI]':>28} {'rel.':>6} "
        f"{'AUC':>6} {'MRR@10':>7} {'train':>7}"
    )
    print(
        f"{'base':22} {base_err['error_rate']:7.2%} [{base_err['ci95'][0]:.1%}, {base_err['ci95'][1]:.1%}] "
        f"{'':>28} {'':>6} {base_err['roc_auc']:6.3f} {base_mrr:7.3f} {'':>7}"
    )
    for name, run in runs.items():
        cand = run["pair_error"]["candidate"]
        d, (lo, hi) = run["pair_error"]["delta_error"], run["pair_error"]["delta_ci95"]
        rel = run["pair_error"]["relative_error_reduction"]
        print(
            f"{name:22} {cand['error_rate']:7.2%} [{cand['ci95'][0]:.1%}, {cand['ci95'][1]:.1%}] "
            f"{d:+8.2%} [{lo:+.2%}, {hi:+.2%}] {rel:6.1%} {cand['roc_auc']:6.3f} "
            f"{run['retrieval']['candidate']['mrr@10']:7.3f} {run['train_s']:6.0f}s"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
