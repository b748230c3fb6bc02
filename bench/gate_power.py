"""How often the gate promotes, over seeds, candidates whose true effect is known: its power and false promotions.

Each seed simulates one demo-sized burst of SciFact traffic (three uniform passes of the traffic claims by the
demo's users, written in bulk as `bench/learners.py` does), mines it with the cycle's own split, and puts
four candidates through the cycle's own retrieval views and gate (`gate_checks` with the default settings):

- identical: the incumbent itself (the identity adapter); its true effect is exactly zero;
- noise: the identity plus a small random matrix (scale `--noise`); its true effect on the check claims is
  measured and is about zero or below;
- oracle: a corpus-aware adapter trained on the traffic claims' *judgements* (not on clicks): truly better,
  by the amount measured on the check claims;
- learner: what the default adapter cycle trains from the clicks (adapter + memory).

The truth of each is its nDCG@10 change on the check claims (never asked), against their judgements.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/gate_power.py [--seeds 20]

Prints a table and writes bench/results/gate_power.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learners import RESULTS, base_vectors, judge, write_traffic  # noqa: E402

from flywheel.config import Settings  # noqa: E402
from flywheel.cycle.adapter import gather_vectors, train_learner, training_arrays  # noqa: E402
from flywheel.cycle.evaluation import next_traffic_view, unseen_view  # noqa: E402
from flywheel.cycle.gate import decide, gate_checks  # noqa: E402
from flywheel.cycle.report.model import CycleReport  # noqa: E402
from flywheel.cycle.steps import mine_and_split  # noqa: E402
from flywheel.lab.demo import DEMO_USER  # noqa: E402
from flywheel.lab.simulate import Traffic  # noqa: E402
from flywheel.lab.worlds import load_world  # noqa: E402
from flywheel.learn.query_adapter import AdapterConfig, train_adapter  # noqa: E402
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter  # noqa: E402
from flywheel.scoring.ranking import compare_scores, retrieval_scores  # noqa: E402
from flywheel.serve.service import Service  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

CANDIDATES = ("identical", "noise", "oracle", "learner")


def oracle(world: Any, vec: dict, cache: Any) -> QueryAdapter:
    """A corpus-aware adapter trained on the traffic claims' judgements: better than the base by construction."""
    texts = sorted(world.traffic_queries)
    queries = np.stack([vec[world.traffic_queries[q]] for q in texts])
    rows = [
        (i, cache.doc_row[d], -1)
        for i, q in enumerate(texts)
        for d in sorted(world.traffic_relevant[q])  # a fixed order, whatever the hash seed
        if d in cache.doc_row
    ]
    trained = train_adapter(queries, cache.docs, np.array(rows), None, AdapterConfig(validation_share=0.0))
    return QueryAdapter("oracle", cache.base, trained.weight, trained.bias)


def noise(dim: int, scale: float, seed: int, base: str) -> QueryAdapter:
    """The identity plus a small random matrix: no knowledge, only a perturbation."""
    rng = np.random.default_rng(1000 + seed)
    weight = np.eye(dim, dtype=np.float32) + scale * rng.normal(size=(dim, dim)).astype(np.float32) / np.sqrt(dim)
    return QueryAdapter("noise", base, weight, np.zeros(dim, np.float32))


def run_seed(world: Any, vec: dict, seed: int, noise_scale: float) -> list[dict[str, Any]]:
    """One burst of traffic, four candidates through the gate."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="flywheel-gate-") as tmp:
        settings = Settings(data_dir=Path(tmp), base_model=packaged_model_path(), seed=seed)
        service = Service.open(settings)
        try:
            write_traffic(service, world, vec, Traffic(rounds=3, user=DEMO_USER), seed)
            mined, train_rows, heldout_rows = mine_and_split(
                service, service.encoder, CycleReport(cycle_id="g", created_at="", kind="adapter")
            )
            cache = gather_vectors(service, service.encoder, mined.pairs, (s.query for s in mined.next_traffic))
            arrays = training_arrays(train_rows, cache)
            dim = cache.docs.shape[1]
            candidates = {
                "identical": QueryAdapter.identity(dim, "identical", cache.base),
                "noise": noise(dim, noise_scale, seed, cache.base),
                "oracle": oracle(world, vec, cache),
                "learner": train_learner(arrays, cache, settings, "learner")[0],
            }
            base_check = judge(world, vec, cache, None, seed)
            corpus = dict.fromkeys(cache.doc_ids, "")
            for name, candidate in candidates.items():
                sides = {
                    "incumbent": AdaptedQueries(cache.base, cache.query_matrix, None),
                    "candidate": AdaptedQueries(cache.base, cache.query_matrix, candidate),
                }

                def score(side: str, q: dict, rel: dict, judged: dict | None = None, sides: dict = sides) -> dict:
                    return retrieval_scores(sides[side], q, corpus, rel, 10, cache.docs, judged)

                views = {
                    "unseen": unseen_view(score, heldout_rows, train_rows, seed, mined.shown),
                    "next_traffic": next_traffic_view(score, mined.next_traffic, train_rows, seed),
                }
                decision = decide(gate_checks(None, 0, views, settings))
                truth = compare_scores(base_check, judge(world, vec, cache, candidate, seed), seed=seed)
                rows.append(
                    {
                        "seed": seed,
                        "candidate": name,
                        "promoted": decision.promote,
                        "true_delta": round(truth["delta"]["ndcg@10"]["mean"], 4),
                        # what the gate reads: each search ranks the results it showed (gate_ranking "judged")
                        "next_delta": round(views["next_traffic"]["judged"]["ndcg@10"]["delta"], 4),
                        "next_mde": views["next_traffic"]["judged"]["mde"]["ndcg@10"],
                        "unseen_delta": round(views["unseen"]["judged"]["ndcg@10"]["delta"], 4),
                        "reasons": decision.reasons,
                    }
                )
        finally:
            service.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--noise", type=float, default=0.1)
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    world = load_world("scifact")
    vec = base_vectors(world, SentenceTransformer(packaged_model_path(), device="cpu"))
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        rows += run_seed(world, vec, seed, args.noise)
        print(f"seed {seed}: " + ", ".join(f"{r['candidate']} {'P' if r['promoted'] else '-'}" for r in rows[-4:]))
    table = []
    for name in CANDIDATES:
        mine = [r for r in rows if r["candidate"] == name]
        table.append(
            {
                "candidate": name,
                "promoted": sum(r["promoted"] for r in mine),
                "seeds": len(mine),
                "true_delta_mean": round(float(np.mean([r["true_delta"] for r in mine])), 4),
                "next_delta_mean": round(float(np.mean([r["next_delta"] for r in mine])), 4),
                "next_mde_mean": round(float(np.mean([r["next_mde"] for r in mine])), 4),
            }
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "summary": table,
        "rows": rows,
        "wall_s": round(time.monotonic() - started, 1),
        "command": " ".join(sys.argv),
    }
    (RESULTS / "gate_power.json").write_text(json.dumps(out, indent=2) + "\n")
    print("\ncandidate   promoted/seeds  true nDCG@10 change (check claims)  next traffic, judged: change  MDE")
    for t in table:
        print(
            f"{t['candidate']:10}  {t['promoted']:>3}/{t['seeds']:<3}        {t['true_delta_mean']:+.4f}"
            f"                          {t['next_delta_mean']:+.4f}             {t['next_mde_mean']:.4f}"
        )


if __name__ == "__main__":
    main()
