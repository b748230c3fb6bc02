"""Query memory: each clicked document counted once, or weighed by its clicks (the default), over seeds.

On the simulated logs of `bench/learners.py` (same users, cycle split and judging), with and without the
service's exploration limited to repeated questions (`--explore`, `FLYWHEEL_EXPLORE_REPEATS`), the memory is
built from the same training rows two ways: every clicked (passed-over) document of a question weighs 1, or
weighs its clicks (negative votes), so a document thirty users chose outweighs one misclick. Printed: the
relative change in nDCG@10 against the base on every next-traffic search (true labels) and on the check
queries, for the memory alone and under the default map (adapter+memory).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory_votes.py [--worlds scifact,quora] [--seeds 0,1,2] \
        [--explore 0,1] [--explore-slots 7] [--explore-depth 40] [--explore-repeats 2]

Writes bench/results/memory_votes.json; base vectors are cached in bench/.cache like bench/learners.py.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learners import judge, judge_next, settings_for, simulated_log, worlds_with_vectors, write_results  # noqa: E402

from flywheel.cycle.adapter import memory_config, train_learner, training_arrays  # noqa: E402
from flywheel.lab.worlds import World  # noqa: E402
from flywheel.learn.query_memory import build_memory  # noqa: E402
from flywheel.models.query_adapter import QueryAdapter  # noqa: E402
from flywheel.scoring.exploration import Exploration  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "memory_votes.json"


def run_cell(world: World, vec: dict, traffic_name: str, seed: int, exploration: Exploration) -> dict[str, Any]:
    """Simulate and mine one log; both memories, alone and under the default map, against the base."""
    log = simulated_log(world, vec, traffic_name, seed, exploration)
    cache, window, train_rows, settings = log.cache, log.window, log.train_rows, log.settings
    arrays = training_arrays(train_rows, cache)
    default = train_learner(arrays, cache, settings_for("adapter+memory", settings), "cand")[0]
    once = build_memory(arrays.queries, cache.docs, arrays.pairs, memory_config(settings), None, arrays.popularity)
    dim = cache.docs.shape[1]
    identity = (np.eye(dim, dtype=np.float32), np.zeros(dim, np.float32))
    candidates = {
        "memory, each document once": QueryAdapter("c", cache.base, *identity, once),
        "memory, by votes": QueryAdapter("c", cache.base, *identity, default.memory),
        "adapter+memory, each document once": QueryAdapter("c", cache.base, default.weight, default.bias, once),
        "adapter+memory, by votes": default,
    }
    base_next = judge_next(world, vec, cache, None, window)["ndcg@10"].mean()
    base_check = judge(world, vec, cache, None, seed)["ndcg@10"].mean()
    rows = {}
    for name, cand in candidates.items():
        nxt = judge_next(world, vec, cache, cand, window)["ndcg@10"].mean()
        check = judge(world, vec, cache, cand, seed)["ndcg@10"].mean()
        rows[name] = {"next": round(float(nxt / base_next - 1), 4), "check": round(float(check / base_check - 1), 4)}
    return {
        "world": world.name,
        "traffic": traffic_name,
        "seed": seed,
        "explore": exploration.share,
        "shown_ndcg": log.simulation["shown_ndcg"],
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="scifact,quora")
    parser.add_argument("--traffic", default="zipf,uniform")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--explore", default="0,1", help="exploration shares to simulate")
    parser.add_argument("--explore-slots", type=int, default=7)
    parser.add_argument("--explore-depth", type=int, default=40)
    parser.add_argument("--explore-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    cells = []
    for world, vec in worlds_with_vectors(args.worlds):
        for traffic in args.traffic.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for share in (float(x) for x in args.explore.split(",")):
                    explore = Exploration(share, args.explore_slots, args.explore_depth, args.explore_repeats)
                    cell = run_cell(world, vec, traffic, seed, explore)
                    cells.append(cell)
                    parts = " | ".join(
                        f"{k} {v['next'] * 100:+.1f}% / {v['check'] * 100:+.1f}%" for k, v in cell["rows"].items()
                    )
                    print(
                        f"{world.name} {traffic:7} seed {seed} explore {share:.2f} shown {cell['shown_ndcg']:.3f} "
                        f"next / check: {parts}",
                        flush=True,
                    )
    write_results(args.out, {"cells": cells})


if __name__ == "__main__":
    main()
