"""Quality vs training data: base vs fine-tuned pair error and nDCG@10 on the Quora dev split.

Trains all-MiniLM-L6-v2 on 300, 1k, 3k and 10k pairs drawn (seeded shuffle, nested subsets) from
train_pool.jsonl.gz with `flywheel sweep`'s machinery (full fine-tune, full dimension, the default loss), then
scores each model on dev.jsonl.gz (threshold fitted on half of dev grouped by query, error on the other half,
paired-bootstrap CI of the change vs the untrained base) and on dev_retrieval (nDCG@10 and MRR@10 over the
4,862-question corpus, paired CI vs base). The baseline is the untrained base model, scored in the same run.
Resumable: the sweep CSV keeps finished cells. Usage:

    HF_HUB_OFFLINE=1 .venv/bin/python bench/quality.py [--sizes 300,1000,3000,10000] [--max-minutes 25]

Prints a table and writes bench/results/quality.json, quality_sweep.csv and quality_sweep.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from flywheel.lab.sweep import SweepSpec, cell_id, load_split, run_sweep  # noqa: E402
from flywheel.models.loading import load_model  # noqa: E402
from flywheel.scoring.pair_error import paired_bootstrap
from flywheel.scoring.ranking import retrieval_scores  # noqa: E402

DATA = Path("/work/shared/data/quora_duplicate_questions")
RESULTS = Path(__file__).resolve().parent / "results"


def load_retrieval(folder: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """BEIR-style queries, corpus and qrels (header line, score > 0 = relevant)."""
    from flywheel.formats.records import open_text

    def rows(path: Path) -> list[dict[str, Any]]:
        with open_text(path) as fh:
            return [json.loads(line) for line in fh if line.strip()]

    queries = {q["_id"]: q["text"] for q in rows(folder / "queries.jsonl")}
    corpus = {d["_id"]: d["text"] for d in rows(folder / "corpus.jsonl.gz")}
    relevant: dict[str, set[str]] = {}
    for line in (folder / "qrels.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        qid, did, score = line.split("\t")
        if int(score) > 0:
            relevant.setdefault(qid, set()).add(did)
    return queries, corpus, relevant


def main() -> None:
    """Run the sweep cells, then retrieval metrics per model, and write the table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--sizes", default="300,1000,3000,10000")
    parser.add_argument("--max-minutes", type=float, default=None, help="training cap per cell")
    parser.add_argument("--extra-model", action="append", default=[], help="also score this trained model dir")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/flywheel-bench-quality"))
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.json")
    args = parser.parse_args()
    spec = SweepSpec(
        eval_file=args.data / "dev.jsonl.gz", train_file=args.data / "train_pool.jsonl.gz",
        sizes=[int(s) for s in args.sizes.split(",")], dims=[None], modes=["full"], max_minutes=args.max_minutes,
    )  # fmt: skip
    csv_path = args.out.with_name("quality_sweep.csv")
    started = time.monotonic()
    rows = run_sweep(spec, csv_path, work_dir=args.work_dir, keep_models=True, on_row=_print_row)
    data_key = load_split(spec).data_key
    retrieval = load_retrieval(args.data / "dev_retrieval")
    base_scores = retrieval_scores(load_model(spec.models[0]), *retrieval)
    report: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.1f}",
        "setup": {
            "base_model": "all-MiniLM-L6-v2 (packaged)", "train_file": str(spec.train_file),
            "eval_file": str(spec.eval_file), "retrieval": str(args.data / "dev_retrieval"),
            "eval": "pair error: threshold on half of dev (grouped by query), error on the other half, 1000 boots",
        },
        "base": {"pair_error": _pair(rows[0]), "retrieval": _means(base_scores)},
        "runs": [],
    }  # fmt: skip
    models = [(r, args.work_dir / cell_id(spec, data_key, r["model"], "full", None, int(r["size"]))) for r in rows[1:]]
    models += [(None, Path(m)) for m in args.extra_model]
    # A resumed run keeps the retrieval numbers of earlier cells whose models are gone (the CSV keeps their rows).
    previous = json.loads(args.out.read_text(encoding="utf-8")).get("runs", []) if args.out.exists() else []
    earlier = {r.get("n_train"): r for r in previous}
    for row, model_dir in models:
        if not model_dir.exists():
            kept = earlier.get(int(row["n_train"])) if row is not None else None
            print(f"{model_dir}: model not kept; {'earlier numbers kept' if kept else 'skipped'}", file=sys.stderr)
            if kept:
                report["runs"].append(kept)
            continue
        scores = retrieval_scores(load_model(model_dir), *retrieval)
        run: dict[str, Any] = {"model": str(model_dir), "retrieval": _means(scores), "retrieval_delta": {}}
        for name in ("ndcg@10", "mrr@10"):
            mean, lo, hi = paired_bootstrap(base_scores[name], scores[name])
            run["retrieval_delta"][name] = {"mean": mean, "ci95": [lo, hi]}
        if row is not None:
            run.update(n_train=int(row["n_train"]), pair_error=_pair(row), train_s=float(row["train_seconds"]))
            run.update(steps=int(row["steps"]), stop_reason=row["stop_reason"] or None)
        report["runs"].append(run)
    report["wall_s"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)
    if not args.extra_model:
        shutil.rmtree(args.work_dir, ignore_errors=True)


def _pair(row: dict[str, Any]) -> dict[str, Any]:
    """The pair-error fields of a sweep row as numbers."""
    keys = ("error_rate", "ci_low", "ci_high", "delta_vs_base", "delta_ci_low", "delta_ci_high", "relative_reduction")
    return {k: float(row[k]) for k in keys} | {"n_test": int(row["n_test"]), "roc_auc": float(row["roc_auc"])}


def _means(scores: dict[str, Any]) -> dict[str, float]:
    """Mean of each per-query metric."""
    return {k: float(v.mean()) for k, v in scores.items() if k != "query_ids"} | {"n_queries": len(scores["query_ids"])}


def _print_row(row: dict[str, Any]) -> None:
    print(f"cell {row['mode']} n={row['n_train']}: error {float(row['error_rate']):.2%}", flush=True)


def print_table(report: dict[str, Any]) -> None:
    """One line per model: pair error [CI], change vs base [CI], relative cut, nDCG@10 (change [CI])."""
    base = report["base"]
    print(f"\n{'train pairs':>11} {'pair error [95% CI]':>24} {'vs base [95% CI]':>26} {'rel. cut':>8} "
          f"{'nDCG@10':>8} {'vs base [95% CI]':>26} {'train s':>8}")  # fmt: skip
    p = base["pair_error"]
    print(f"{'0 (base)':>11} {p['error_rate']:7.2%} [{p['ci_low']:.1%}, {p['ci_high']:.1%}] {'':>26} {'':>8} "
          f"{base['retrieval']['ndcg@10']:8.3f}")  # fmt: skip
    for run in report["runs"]:
        n = str(run.get("n_train", Path(run["model"]).name))
        r, d = run["retrieval"], run["retrieval_delta"]["ndcg@10"]
        nd = f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
        if "pair_error" in run:
            p = run["pair_error"]
            err = f"{p['error_rate']:7.2%} [{p['ci_low']:.1%}, {p['ci_high']:.1%}]"
            dlt = f"{p['delta_vs_base']:+.2%} [{p['delta_ci_low']:+.2%}, {p['delta_ci_high']:+.2%}]"
            print(f"{n:>11} {err:>24} {dlt:>26} {p['relative_reduction']:8.1%} {r['ndcg@10']:8.3f} {nd:>26} "
                  f"{run['train_s']:8.0f}")  # fmt: skip
        else:
            print(f"{n:>11} {'':>24} {'':>26} {'':>8} {r['ndcg@10']:8.3f} {nd:>26}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
