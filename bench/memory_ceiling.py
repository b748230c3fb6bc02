"""What remembering answered questions can earn on next traffic at best, by how deep clicks can reach.

For each world and traffic the simulated log of `bench/learners.py` (same users, same seed, same cycle split)
is mined as an adapter cycle mines it. Then every search of the next-traffic window (as it came, repeats and
searches nobody clicked included) is ranked four ways and judged by its query's true relevance labels:

- base: the base model alone;
- adapter+memory: the default learner, trained by the cycle on the training side of the split;
- oracle memory @K: a perfect memory of the questions users already answered: for a search whose query has a
  click on the training side, the documents of its query that are truly relevant and that the base ranks at
  or above K are moved to the top (in the base's order); every other search keeps the base's ranking.

"oracle @10" is the most any memory can earn from users who only see the top 10 (it knows every relevant
document they could have clicked, with no position bias, misclicks or abandonment); larger K is what it
could earn if users also saw, and clicked, what the base ranks further down (exploration). Printed with the
share of next-traffic searches whose query users had already answered (what a memory can help at all).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/memory_ceiling.py [--worlds scifact,quora] [--traffic zipf,uniform] \
        [--depths 10,20,50,100,0] [--seed 0]

(depth 0 = every relevant document.) Writes bench/results/memory_ceiling.json; base vectors are cached in
bench/.cache like bench/learners.py.
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
from learners import _ndcg, judge_next, next_relevant, settings_for, simulated_log, worlds_with_vectors, write_results  # noqa: E402

from flywheel.cycle.adapter import train_learner, training_arrays  # noqa: E402
from flywheel.cycle.evaluation import arrival_key  # noqa: E402
from flywheel.lab.worlds import World  # noqa: E402
from flywheel.scoring.ranking import compare_scores  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "memory_ceiling.json"


def oracle_ndcg(
    window: list[tuple[str, str]],
    orders: np.ndarray,
    answered: set[str],
    relevant: dict[str, set[str]],
    doc_ids: list[str],
    depth: int,
) -> np.ndarray:
    """Per search of `window`, nDCG@10 of the base ranking with a perfect memory of the `answered` queries.

    Args:
        window: (search id, query text) of every next-traffic search, in order.
        orders: (searches, documents) the base's ranking of every document row, best first, one row per search.
        answered: query texts with a click on the training side (what a memory could have learned).
        relevant: search id -> its query's true relevant document ids.
        doc_ids: document ids (the rows `orders` ranks).
        depth: relevant documents the base ranks at or above this rank are known (0: every one).

    Returns:
        nDCG@10 per search, in `window` order.
    """
    out = []
    reach = depth or len(doc_ids)
    for (sid, query), order in zip(window, orders, strict=True):
        ranked = [doc_ids[j] for j in order[: max(reach, 10)]]
        if query in answered:
            known = [d for d in ranked[:reach] if d in relevant[sid]]
            ranked = known + [d for d in ranked if d not in known]
        out.append(_ndcg(ranked, relevant[sid]))
    return np.asarray(out)


def run_cell(world: World, vec: dict, traffic_name: str, seed: int, depths: list[int]) -> dict[str, Any]:
    """Simulate and mine one world x traffic; the base, the default learner and the oracles on next traffic."""
    log = simulated_log(world, vec, traffic_name, seed)
    cache, window, train_rows = log.cache, log.window, log.train_rows
    arrays = training_arrays(train_rows, cache)
    learned = train_learner(arrays, cache, settings_for("adapter+memory", log.settings), "cand")[0]
    relevant = next_relevant(world, window)
    base = judge_next(world, vec, cache, None, window)
    ids = base["query_ids"]
    position = {arrival_key(i): i for i in range(len(window))}  # judge_next keys each search by its arrival
    answered = {r.query for r in train_rows if r.label == 1}
    rows = {"adapter+memory": judge_next(world, vec, cache, learned, window)["ndcg@10"]}
    queries = np.stack([vec[query] for _, query in window])
    orders = np.argsort(-(queries @ cache.docs.T), axis=1, kind="stable")  # once: every depth reads it
    for depth in depths:
        scores = oracle_ndcg(window, orders, answered, relevant, list(cache.doc_ids), depth)
        rows[f"oracle memory @{depth or 'all'}"] = scores[[position[s] for s in ids]]
    inc = {"query_ids": ids, "ndcg@10": base["ndcg@10"]}
    out = []
    for name, scores in rows.items():
        delta = compare_scores(inc, {"query_ids": ids, "ndcg@10": scores}, seed=seed)["delta"]["ndcg@10"]
        out.append(
            {
                "ranker": name,
                "ndcg@10": round(float(scores.mean()), 4),
                "relative": round(float(scores.mean() / inc["ndcg@10"].mean() - 1), 4),
                "ci95": [round(x, 4) for x in delta["ci95"]],
            }
        )
    repeat = float(np.mean([q in answered for _, q in window]))
    return {
        "world": world.name,
        "traffic": traffic_name,
        "seed": seed,
        "next_searches": len(window),
        "answered_share": round(repeat, 4),
        "base": round(float(inc["ndcg@10"].mean()), 4),
        "rows": out,
        "simulation": log.simulation,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="scifact,quora")
    parser.add_argument("--traffic", default="zipf,uniform")
    parser.add_argument("--depths", default="10,20,50,100,0")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    depths = [int(x) for x in args.depths.split(",")]
    cells = []
    for world, vec in worlds_with_vectors(args.worlds):
        for traffic in args.traffic.split(","):
            cell = run_cell(world, vec, traffic, args.seed, depths)
            cells.append(cell)
            print(
                f"{cell['world']} {cell['traffic']}: {cell['next_searches']} next-traffic searches, "
                f"{cell['answered_share']:.0%} of them asked and clicked before; base nDCG@10 {cell['base']:.3f}"
            )
            for r in cell["rows"]:
                print(
                    f"  {r['ranker']:22} {r['ndcg@10']:.3f} ({r['relative'] * 100:+.1f}%) "
                    f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
                    flush=True,
                )
    write_results(args.out, {"cells": cells})


if __name__ == "__main__":
    main()
