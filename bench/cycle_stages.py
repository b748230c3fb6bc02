"""One cycle's time per stage, and its training speed vs a plain sentence-transformers training loop.

World: Quora duplicate questions (bench/quora_cycle.py's build_world): question1 of a duplicate pair is a
query, question2 the document that answers it, with hard negatives and other questions in the corpus.
Simulated users search and click/skip through the real HTTP API (FastAPI TestClient), then one cycle runs.
The gate is opened (no minimum improvement, no significance) so that every stage runs and is timed: mine,
train, evaluate, re-embed, evaluate_retrieval, swap; this bench measures speed, not quality.

Baseline (same run, same process budget): SentenceTransformerTrainer, in-process, with the same losses
(MultipleNegativesRankingLoss + OnlineContrastiveLoss), batch size, learning rate, epochs and the same rows
the cycle trained on (re-mined from the store, which is deterministic). Training pairs/s = rows the trainer
saw / seconds; the flywheel side is the cycle's whole train stage (spawned subprocess, model load, save).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/cycle_stages.py [--queries 400] [--corpus 1500] [--model PATH]

Prints a table and writes bench/results/cycle_stages.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from quora_cycle import DEFAULT_PAIRS, build_world  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def run_flywheel_cycle(settings: Any, queries: dict, corpus: dict, relevant: dict, seed: int) -> dict[str, Any]:
    """Ingest, simulate users over HTTP, run one cycle; return the cycle's report and the setup timings."""
    from fastapi.testclient import TestClient

    from flywheel.api.app import create_app
    from flywheel.lab.simulate import simulate

    setup: dict[str, float] = {}
    with TestClient(create_app(settings)) as api:
        t0 = time.perf_counter()
        docs = [{"id": k, "text": v} for k, v in corpus.items()]
        for start in range(0, len(docs), 500):
            api.post("/documents", json={"documents": docs[start : start + 500]}).raise_for_status()
        setup["ingest_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        sim = simulate(api, queries, relevant, seed=seed, progress=True)
        setup["simulate_s"] = time.perf_counter() - t0
        cycle_id = api.post("/cycles", json={"mode": "full"}).json()["cycle_id"]
        while api.get(f"/cycles/{cycle_id}").json()["state"] in ("queued", "running"):
            time.sleep(1)
        report = api.get(f"/reports/{cycle_id}").json()
    return {"report": report, "setup": setup, "simulation": vars(sim)}


def training_rows(settings: Any) -> tuple[list, list]:
    """The (examples, labelled pairs) the cycle trained on, mined again from the store (deterministic)."""
    from flywheel.cycle.mining import mine_pairs
    from flywheel.cycle.split import labelled, split_by_group
    from flywheel.formats.pairs import examples_from_labelled
    from flywheel.serve.store import Store

    store = Store(settings.db_file)
    try:
        mined = mine_pairs(store, window_days=None, max_pairs_per_query=settings.max_pairs_per_query)
    finally:
        store.close()
    train_rows, _ = split_by_group(mined.pairs, lambda p: p.group, settings.heldout_percent)
    pairs = labelled(train_rows)
    return examples_from_labelled(pairs), pairs


def run_plain_trainer(model_path: str, examples: list, pairs: list, config: Any, out: Path) -> dict[str, Any]:
    """Plain SentenceTransformerTrainer in this process on the same rows and losses; load + train + save."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer import losses

    from flywheel.learn.finetune import _build_datasets  # the same rows the flywheel trainer builds from these pairs

    t0 = time.perf_counter()
    model = SentenceTransformer(model_path, device="cpu")
    datasets = _build_datasets(examples, pairs, config)
    loss = {
        name: losses.OnlineContrastiveLoss(model) if name == "labelled" else losses.MultipleNegativesRankingLoss(model)
        for name in datasets
    }
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), num_train_epochs=config.epochs, per_device_train_batch_size=config.batch_size,
        learning_rate=config.effective_learning_rate(), save_strategy="no", report_to="none", use_cpu=True,
        disable_tqdm=True, seed=config.seed,
    )  # fmt: skip
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=datasets, loss=loss)
    trainer.train()
    model.save(str(out / "model"))
    rows = sum(len(ds) for ds in datasets.values())
    return {"seconds": time.perf_counter() - t0, "rows": rows, "steps": int(trainer.state.global_step)}


def main() -> None:
    """Run the cycle, then the baseline trainer, and write the table and JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=DEFAULT_PAIRS)
    parser.add_argument("--queries", type=int, default=400)
    parser.add_argument("--corpus", type=int, default=1500)
    parser.add_argument("--model", default=None, help="base model (default: the packaged MiniLM)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cycle_stages.json")
    args = parser.parse_args()

    from flywheel.config import Settings
    from flywheel.cycle.full import train_config
    from flywheel.util.packaged import packaged_model_path

    model = args.model or packaged_model_path()
    queries, corpus, relevant = build_world(args.pairs, args.queries, args.corpus, args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp) / "data", base_model=model, min_improvement=0.0, require_significant=False,
            max_ndcg_drop=1.0, min_heldout_pairs=4,
        )  # fmt: skip
        cycle = run_flywheel_cycle(settings, queries, corpus, relevant, args.seed)
        report = cycle["report"]
        examples, pairs = training_rows(settings)
        config = train_config(settings)
        plain = run_plain_trainer(model, examples, pairs, config, Path(tmp) / "plain")
    training = report.get("training") or {}
    rows = sum((training.get("n_rows") or {}).values())
    stage_train = report["timings"].get("train")
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "world": {"queries": len(queries), "corpus": len(corpus)},
        "simulation": cycle["simulation"],
        "setup": cycle["setup"],
        "decision": report["decision"],
        "counts": report.get("counts"),
        "stage_seconds": report["timings"],
        "cycle_seconds": report.get("duration_s"),
        "flywheel_training": {
            "rows": rows,
            "steps": training.get("steps"),
            "stage_seconds": stage_train,
            "trainer_seconds": training.get("duration_s"),
            "rows_per_s_stage": rows / stage_train if stage_train else None,
        },  # fmt: skip
        "plain_trainer": {**plain, "rows_per_s": plain["rows"] / plain["seconds"]},
        "same_rows": rows == plain["rows"],
    }
    if stage_train:
        result["rows_per_s_ratio_flywheel_over_plain"] = (
            result["flywheel_training"]["rows_per_s_stage"] / (result["plain_trainer"]["rows_per_s"])
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print_table(result)


def print_table(result: dict[str, Any]) -> None:
    """Stage times, then training throughput of both paths and their ratio."""
    print(f"cycle on {result['world']['corpus']} documents, {result['counts'].get('train_pairs')} training pairs, "
          f"decision {result['decision']} ({result['machine']})")  # fmt: skip
    print(f"{'stage':<22}{'seconds':>9}")
    for stage, seconds in result["stage_seconds"].items():
        print(f"{stage:<22}{seconds:>9.1f}")
    print(f"{'whole cycle':<22}{result['cycle_seconds']:>9.1f}")
    fw, plain = result["flywheel_training"], result["plain_trainer"]
    print(f"\n{'training':<34}{'rows':>7}{'steps':>7}{'seconds':>9}{'rows/s':>8}")
    print(f"{'flywheel train stage (subprocess)':<34}{fw['rows']:>7}{fw['steps']:>7}{fw['stage_seconds']:>9.1f}"
          f"{fw['rows_per_s_stage']:>8.1f}")  # fmt: skip
    print(f"{'plain SentenceTransformerTrainer':<34}{plain['rows']:>7}{plain['steps']:>7}{plain['seconds']:>9.1f}"
          f"{plain['rows_per_s']:>8.1f}")  # fmt: skip
    if "rows_per_s_ratio_flywheel_over_plain" in result:
        print(f"flywheel / plain rows/s = {result['rows_per_s_ratio_flywheel_over_plain']:.2f}x "
              f"(same rows: {result['same_rows']})")  # fmt: skip


if __name__ == "__main__":
    main()
