"""How far down clicks must reach: the default query map trained on perfect clicks, by the depth they can reach.

For each world, every traffic query's relevant documents that the base model ranks at or above depth K become
clicks (no position bias, no misclicks, no abandonment: the best any user could do when shown the top K),
and the adapter cycle's default map (`flywheel.cycle.adapter.adapter_config` on default settings) is trained
on them from identity. Judged on the world's check queries (never asked) by nDCG@10 against the base, with
the paired 95% bootstrap CI. K = 10 is what a loop that always shows its own top 10 can ever be told; larger
K is what it could learn if users saw (and so could click) results from further down. Also printed: where
the traffic queries' relevant documents rank under the base, and each depth's check queries split in two:
those with a relevant document that was clicked (a learned prior over documents can lift them) and those
without (only generalisation can), with the most any learner could gain if every query of the first group
reached nDCG@10 = 1 and the second stayed as it is.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/click_depth.py [--worlds scifact,quora] [--depths 10,20,50,100,0]

(depth 0 = every relevant document.) Writes bench/results/click_depth.json; base vectors are cached in
bench/.cache like bench/learners.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learners import base_vectors  # noqa: E402

from flywheel.config import Settings  # noqa: E402
from flywheel.cycle.adapter import adapter_config  # noqa: E402
from flywheel.lab.worlds import World, load_world  # noqa: E402
from flywheel.learn.query_adapter import train_adapter  # noqa: E402
from flywheel.models.query_adapter import normalise  # noqa: E402
from flywheel.scoring.ranking import compare_scores  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "click_depth.json"
BANDS = ((1, 1), (2, 3), (4, 10), (11, 20), (21, 50), (51, 100), (101, 10**9))


def per_query_ndcg(queries: np.ndarray, docs: np.ndarray, relevant: list[set[int]], k: int = 10) -> np.ndarray:
    """nDCG@k of each query row against its relevant document rows, exact search over every document."""
    top = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
    gains = 1 / np.log2(np.arange(2, k + 2))
    out = [
        gains[[d in rel for d in row]].sum() / gains[: min(len(rel), k)].sum()
        for row, rel in zip(top, relevant, strict=True)
    ]
    return np.asarray(out)


def run_world(world: World, vec: dict, depths: list[int], settings: Settings) -> dict[str, Any]:
    """Rank bands of the traffic queries' relevant documents, and one trained map per depth."""
    row = {d.id: i for i, d in enumerate(world.corpus)}
    docs = np.stack([vec[d.text] for d in world.corpus])
    traffic = sorted(world.traffic_queries)
    check = [q for q in sorted(world.check_queries) if world.check_relevant[q] & row.keys()]
    q_traffic = np.stack([vec[world.traffic_queries[q]] for q in traffic])
    q_check = np.stack([vec[world.check_queries[q]] for q in check])
    check_rel = [{row[d] for d in world.check_relevant[q] if d in row} for q in check]
    order = np.argsort(-(q_traffic @ docs.T), axis=1)
    rank = np.empty_like(order)
    rank[np.arange(len(traffic))[:, None], order] = np.arange(1, docs.shape[0] + 1)
    # Sorted: a set of strings iterates in an order that changes with the hash seed, and so would the batches.
    pairs = [(i, row[d]) for i, q in enumerate(traffic) for d in sorted(world.traffic_relevant[q]) if d in row]
    ranks = np.array([rank[i, j] for i, j in pairs])
    bands = {
        f"{a}-{b}" if b < 10**9 else f">{a - 1}": round(float(np.mean((ranks >= a) & (ranks <= b))), 4)
        for a, b in BANDS
    }
    base = per_query_ndcg(q_check, docs, check_rel)
    config = adapter_config(settings)
    rows = []
    for depth in depths:
        examples = np.array([(i, j, -1) for i, j in pairs if depth == 0 or rank[i, j] <= depth], dtype=np.int64)
        clicked = {int(j) for j in examples[:, 1]}
        prior = np.array([bool(rel & clicked) for rel in check_rel])
        t0 = time.monotonic()
        trained = train_adapter(q_traffic, docs, examples, config=config)
        seconds = time.monotonic() - t0
        adapted = normalise(q_check @ trained.weight.T + trained.bias)
        cand = per_query_ndcg(adapted, docs, check_rel)
        ids = np.array([str(i) for i in range(len(check))])
        compared = compare_scores(
            {"query_ids": ids, "ndcg@10": base}, {"query_ids": ids, "ndcg@10": cand}, seed=settings.seed
        )
        delta = compared["delta"]["ndcg@10"]
        rows.append(
            {
                "depth": depth or "all",
                "clicks": len(examples),
                "check": round(float(cand.mean()), 4),
                "relative": round(float(cand.mean() / base.mean() - 1), 4),
                "ci95": [round(x, 4) for x in delta["ci95"]],
                "best_epoch": trained.best_epoch,
                "train_s": round(seconds, 2),
                "queries": len(ids),
                "with_clicked_document": group_summary(prior, base, cand),
                "without": group_summary(~prior, base, cand),
                "bound": clicked_bound(prior, base),
            }
        )
        r = rows[-1]
        print(
            f"{world.name:8} depth {str(r['depth']):>4}: {r['clicks']:5} clicks, check nDCG@10 {base.mean():.3f} -> "
            f"{r['check']:.3f} ({r['relative'] * 100:+.1f}%) CI [{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}], "
            f"epoch kept {r['best_epoch']}\n"
            f"{'':8} check queries with a clicked relevant document {group_line(r['with_clicked_document'])}, "
            f"without {group_line(r['without'])}; bound {r['bound'] * 100:+.1f}%",
            flush=True,
        )
    return {"world": world.name, "base": round(float(base.mean()), 4), "relevant_rank_bands": bands, "rows": rows}


def group_summary(mask: np.ndarray, base: np.ndarray, cand: np.ndarray) -> dict[str, Any]:
    """Share, base and trained nDCG@10 of the check queries `mask` selects."""
    if not mask.any():
        return {"share": 0.0, "base": None, "trained": None}
    return {
        "share": round(float(mask.mean()), 4),
        "base": round(float(base[mask].mean()), 4),
        "trained": round(float(cand[mask].mean()), 4),
    }


def clicked_bound(prior: np.ndarray, base: np.ndarray) -> float:
    """The most a learner of a prior over clicked documents can gain on the check queries, relative to the
    base: every query with a clicked relevant document (`prior`) made perfect, the others unchanged."""
    return round(float(((1 - base) * prior).mean() / base.mean()), 4)


def group_line(group: dict[str, Any]) -> str:
    """One group as 'share%: base -> trained'."""
    if group["base"] is None:
        return "none"
    return f"{group['share'] * 100:.0f}%: {group['base']:.3f} -> {group['trained']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="scifact,quora")
    parser.add_argument("--depths", default="10,20,50,100,0")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(packaged_model_path(), device="cpu")
    settings = Settings(base_model=packaged_model_path())
    depths = [int(x) for x in args.depths.split(",")]
    results = []
    for name in args.worlds.split(","):
        world = load_world(name)
        results.append(run_world(world, base_vectors(world, model), depths, settings))
        print(
            f"{name}: share of relevant documents of traffic queries by base rank {results[-1]['relevant_rank_bands']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"worlds": results, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
