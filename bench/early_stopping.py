"""Early stopping or fixed epochs for the query map, judged on the traffic side only (never the check queries).

The world's traffic queries are split in halves A and B by a hash of their ids; simulated users (the demo's)
ask only A (three uniform passes, or as many Zipf-distributed searches), the cycle mines and splits that
traffic as usual, and the map is trained three ways: the default (15% of training queries set aside, the
epoch whose weights rank their clicks best kept), 20 epochs and 10 epochs with no early stopping. Each is
judged by nDCG@10 on every query of B by its true relevance labels (clicked or not), with the paired 95%
bootstrap CI against the base. This is how the default was checked without looking at the check queries.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/early_stopping.py [--worlds scifact,quora] \
        [--traffic uniform,zipf] [--seeds 0,1]

Writes bench/results/early_stopping.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learners import _summary, base_vectors, judge, write_traffic  # noqa: E402

from flywheel.config import Settings  # noqa: E402
from flywheel.cycle.adapter import adapter_config, gather_vectors, training_arrays  # noqa: E402
from flywheel.cycle.report.model import CycleReport  # noqa: E402
from flywheel.cycle.steps import mine_and_split  # noqa: E402
from flywheel.lab.demo import DEMO_USER  # noqa: E402
from flywheel.lab.simulate import Traffic  # noqa: E402
from flywheel.lab.worlds import World, load_world  # noqa: E402
from flywheel.learn.query_adapter import train_adapter  # noqa: E402
from flywheel.models.query_adapter import QueryAdapter  # noqa: E402
from flywheel.scoring.ranking import compare_scores  # noqa: E402
from flywheel.serve.service import Service  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "early_stopping.json"
VARIANTS: dict[str, dict[str, Any]] = {
    "early stopping (default)": {},
    "20 epochs": {"validation_share": 0.0},
    "10 epochs": {"validation_share": 0.0, "epochs": 10},
}


def halves(world: World) -> World:
    """The world with its traffic queries split: half A asked, half B judged (the check queries left out)."""
    side = {q: hashlib.sha256(f"early-stopping:{q}".encode()).digest()[0] % 2 for q in world.traffic_queries}
    a = {q: t for q, t in world.traffic_queries.items() if side[q] == 0}
    b = {q: t for q, t in world.traffic_queries.items() if side[q] == 1}
    rel = world.traffic_relevant
    return World(world.name, world.description, world.corpus, a, {q: rel[q] for q in a}, b, {q: rel[q] for q in b})


def run(world: World, vec: dict, popularity: str, seed: int) -> list[dict[str, Any]]:
    """Simulate half A, train every variant on the same mined rows, judge each on half B."""
    searches = 3 * len(world.traffic_queries)
    traffic = Traffic(popularity=popularity, searches=searches, user=DEMO_USER)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flywheel-early-stopping-") as tmp:
        settings = Settings(data_dir=Path(tmp), base_model=packaged_model_path(), seed=seed)
        service = Service.open(settings)
        try:
            write_traffic(service, world, vec, traffic, seed)
            report = CycleReport(cycle_id="bench", created_at="", kind="adapter")
            mined, train_rows, _ = mine_and_split(service, service.encoder, report)
            cache = gather_vectors(service, service.encoder, mined.pairs, (s.query for s in mined.next_traffic))
            arrays = training_arrays(train_rows, cache)
            base = judge(world, vec, cache, None, seed)
            for name, change in VARIANTS.items():
                config = dataclasses.replace(adapter_config(settings), **change)
                trained = train_adapter(arrays.queries, cache.docs, arrays.examples, arrays.pairs, config)
                candidate = QueryAdapter("candidate", cache.base, trained.weight, trained.bias, None)
                judged = _summary(compare_scores(base, judge(world, vec, cache, candidate, seed), seed=seed))
                rows.append(
                    {"world": world.name, "traffic": popularity, "seed": seed, "variant": name}
                    | {"best_epoch": trained.best_epoch, "half_b": judged}
                )
                j = rows[-1]["half_b"]
                print(
                    f"{world.name:8} {popularity:8} seed {seed} {name:25} epoch kept {str(trained.best_epoch):4} "
                    f"half B nDCG@10 {j['base']:.3f} -> {j['learner']:.3f} ({j['relative'] * 100:+.1f}%) "
                    f"[{j['ci95'][0]:+.3f}, {j['ci95'][1]:+.3f}]",
                    flush=True,
                )
        finally:
            service.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="scifact,quora")
    parser.add_argument("--traffic", default="uniform,zipf")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(packaged_model_path(), device="cpu")
    rows: list[dict[str, Any]] = []
    for name in args.worlds.split(","):
        full = load_world(name)
        vec = base_vectors(full, model)  # keyed by text: covers both halves
        for popularity in args.traffic.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                rows += run(halves(full), vec, popularity, seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
