"""Would moving documents towards the queries that clicked them earn what the query side cannot? Measured, not built.

Click-through document expansion, the document-side twin of the query memory: each clicked document's vector
becomes normalise(d + beta * mean of the base vectors of the queries that clicked it), every other document
keeps its own. It needs the clicked documents re-scored (or re-indexed) at search time, which the product does
not do; this bench asks whether it would be worth it, on the learners bench's simulated SciFact traffic (same
users, seeds and cycle split as `bench/learners.py`), alone and under the default learner (adapter+memory,
always trained on the real clicks),
judged like the learners table: nDCG@10 on the check claims (never asked) and on every search of the
next-traffic window by true labels, each against the base with a paired 95% bootstrap CI. Also with perfect
clicks (each training-side claim's relevant documents in the base's top 10 clicked once), the best any user could
give it. And, per log, the check claims split as bench/click_depth.py splits them (a relevant document clicked on
the training side or not) under adapter+memory, with the bound that leaves: every claim of the first group made
perfect, the others unchanged.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/doc_expansion.py [--traffic uniform,zipf] [--seeds 0,1,2] [--betas 0.2,0.5]

Writes bench/results/doc_expansion.json; base vectors are cached in bench/.cache like bench/learners.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from click_depth import clicked_bound, group_line, group_summary, per_query_ndcg  # noqa: E402
from learners import base_vectors, next_relevant, settings_for, simulated_log  # noqa: E402

from flywheel.cycle.adapter import train_learner, training_arrays  # noqa: E402
from flywheel.lab.worlds import load_world  # noqa: E402
from flywheel.models.query_adapter import normalise  # noqa: E402
from flywheel.scoring.ranking import compare_scores  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "doc_expansion.json"


def expand(docs: np.ndarray, queries: np.ndarray, clicks: np.ndarray, beta: float) -> np.ndarray:
    """Documents moved towards the mean of the queries that clicked them.

    Args:
        docs: (n, dim) unit base document vectors.
        queries: (m, dim) unit base query vectors.
        clicks: (c, 2) int rows (query row, document row), one per click.
        beta: how far a clicked document moves (0 = not at all).

    Returns:
        (n, dim) unit vectors; unclicked documents unchanged.
    """
    total = np.zeros_like(docs)
    count = np.zeros(len(docs))
    np.add.at(total, clicks[:, 1], queries[clicks[:, 0]])
    np.add.at(count, clicks[:, 1], 1)
    moved = docs.copy()
    hit = count > 0
    moved[hit] += beta * total[hit] / count[hit, None]
    return normalise(moved)


def change(base: np.ndarray, cand: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean, relative change and paired 95% bootstrap CI of per-query nDCG@10."""
    ids = np.array([str(i) for i in range(len(base))])
    delta = compare_scores({"query_ids": ids, "ndcg@10": base}, {"query_ids": ids, "ndcg@10": cand}, seed=seed)
    ci = delta["delta"]["ndcg@10"]["ci95"]
    return {
        "ndcg@10": round(float(cand.mean()), 4),
        "relative": round(float(cand.mean() / base.mean() - 1), 4),
        "ci95": [round(x, 4) for x in ci],
    }


def run(traffic: str, seed: int, betas: list[float], world: Any, vec: dict) -> list[dict[str, Any]]:
    """One simulated log: base, adapter+memory, expansion alone and under it, for real and perfect clicks."""
    log = simulated_log(world, vec, traffic, seed)
    cache, arrays = log.cache, training_arrays(log.train_rows, log.cache)
    row = cache.doc_row
    check = [q for q in sorted(world.check_queries) if world.check_relevant[q] & row.keys()]
    q_check = np.stack([vec[world.check_queries[q]] for q in check])
    check_rel = [{row[d] for d in world.check_relevant[q] if d in row} for q in check]
    truth = next_relevant(world, log.window)
    q_next = np.stack([vec[q] for _, q in log.window])
    next_rel = [{row[d] for d in truth[sid] if d in row} for sid, _ in log.window]
    learner = train_learner(arrays, cache, settings_for("adapter+memory", log.settings), "bench")[0]
    sides = {"base": (q_check, q_next), "adapter+memory": (learner.apply(q_check), learner.apply(q_next))}
    base = {
        v: per_query_ndcg(q, cache.docs, rel)
        for v, q, rel in (("check", q_check, check_rel), ("next", q_next, next_rel))
    }
    # Real clicks: every clicked (query, document) pair of the training side, once.
    real = arrays.pairs[arrays.pairs[:, 2] == 1][:, :2]
    # Perfect clicks: each training-side question's relevant documents that the base ranks in its top 10.
    qid_of = {text: qid for qid, text in world.traffic_queries.items()}
    texts = sorted({r.query for r in log.train_rows})  # the rows of arrays.queries
    top = np.argsort(-(arrays.queries @ cache.docs.T), axis=1)[:, :10]
    perfect = np.array(
        [(i, j) for i, t in enumerate(texts) for j in top[i] if cache.doc_ids[j] in world.traffic_relevant[qid_of[t]]]
    )
    # Where the learner's gain on the check claims falls: those with a relevant document clicked on the
    # training side (a prior over documents can lift them) and the others (only generalisation can).
    clicked = set(real[:, 1].tolist())
    prior = np.array([bool(rel & clicked) for rel in check_rel])
    trained = per_query_ndcg(sides["adapter+memory"][0], cache.docs, check_rel)
    split = {
        "traffic": traffic,
        "seed": seed,
        "with_clicked_document": group_summary(prior, base["check"], trained),
        "without": group_summary(~prior, base["check"], trained),
        "bound": clicked_bound(prior, base["check"]),
    }
    print(
        f"{traffic:7} seed {seed} check claims with a clicked relevant document "
        f"{group_line(split['with_clicked_document'])}, without {group_line(split['without'])} "
        f"(adapter+memory); bound {split['bound'] * 100:+.1f}%",
        flush=True,
    )
    rows = [split]
    for clicks_name, clicks in (("real", real), ("perfect top 10", perfect)):
        for beta in [0.0, *betas]:
            docs = expand(cache.docs, arrays.queries, clicks, beta) if beta else cache.docs
            for side, (qc, qn) in sides.items():
                if not beta and (side == "base" or clicks_name != "real"):  # the base itself / a repeated row
                    continue
                rows.append(
                    {
                        "traffic": traffic,
                        "seed": seed,
                        "clicks": clicks_name,
                        "click_count": len(clicks),
                        "beta": beta,
                        "queries": side,
                        "check": change(base["check"], per_query_ndcg(qc, docs, check_rel), seed),
                        "next": change(base["next"], per_query_ndcg(qn, docs, next_rel), seed),
                    }
                )
                r = rows[-1]
                print(
                    f"{traffic:7} seed {seed} {clicks_name:14} beta {beta:.1f} {side:14} check "
                    f"{r['check']['relative'] * 100:+5.1f}% next {r['next']['relative'] * 100:+5.1f}%",
                    flush=True,
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traffic", default="uniform,zipf")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--betas", default="0.2,0.5")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    world = load_world("scifact")
    vec = base_vectors(world, SentenceTransformer(packaged_model_path(), device="cpu"))
    betas = [float(b) for b in args.betas.split(",")]
    rows, splits = [], []
    for traffic in args.traffic.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            split, *cells = run(traffic, seed, betas, world, vec)
            splits.append(split)
            rows.extend(cells)
    print("\nmean over seeds (check / next, relative to the base)")
    keys = sorted({(r["traffic"], r["clicks"], r["beta"], r["queries"]) for r in rows}, key=str)
    for key in keys:
        cell = [r for r in rows if (r["traffic"], r["clicks"], r["beta"], r["queries"]) == key]
        check = np.mean([r["check"]["relative"] for r in cell]) * 100
        nxt = np.mean([r["next"]["relative"] for r in cell]) * 100
        print(f"{key[0]:7} {key[1]:14} beta {key[2]:.1f} {key[3]:14} check {check:+5.1f}% next {nxt:+5.1f}%")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "splits": splits, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
