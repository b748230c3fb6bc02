"""How many live searches an online test needs to decide: team-draft interleaving against a user-split A/B test,
with simulated users on the shipped SciFact world, for challengers truly better by a known nDCG@10 amount.

The incumbent ranks every SciFact claim (traffic and check claims) against the 5,183 abstracts with the packaged
MiniLM. A challenger adds `boost` to the cosine of each judged-relevant abstract, which lifts relevant results
by a known, measured amount (its nDCG@10 gain over all claims against their judgements). Two null rows: the
incumbent against itself ("identical"), and two equally good but different rankers ("exchangeable": for
each search each side ranks by the cosine plus Gaussian noise of scale 0.01, drawn independently from the same
pool of 20 noisy rankings, so neither is better by symmetry while their lists differ). Users are the demo's
(`flywheel.lab.demo.DEMO_USER`: position-based examination 1/rank, clicks on relevant results, some misclicks
and abandonment), asking claims drawn uniformly.

- Interleaving: each search shows the team-draft merge of both top 10s (`flywheel.scoring.interleaving`), the
  clicks credit a team, and the product's stop rule (`win_share_test`, alpha 0.05) is applied after every search.
- A/B: each search goes to one arm at random; the metric is the reciprocal rank of the first click (0 without
  one); an always-valid normal-mixture test on the difference of means (`mean_difference_test`, alpha 0.05) is
  applied after every 10 searches, its prior scale set to the true MRR difference (the most favourable choice
  for the A/B test; the interleaving test gets no such help).

Both stop at a decision or at --max-searches. Reported per challenger: the share of runs that decided for the
challenger (power; for boost 0 the false-promotion rate), the median searches to a decision (runs undecided at
the limit count as the limit, so a median at the limit means "more than that", marked >=), and the ratio
A/B / interleaving. Takes about 20 minutes on 2 cores.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/online_test.py [--runs 100] [--null-runs 400] [--max-searches 50000]

Prints a table, writes bench/results/online_test.json and bench/results/online_test.png.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from learners import RESULTS, base_vectors  # noqa: E402

from flywheel.lab.demo import DEMO_USER  # noqa: E402
from flywheel.lab.simulate import SimulationStats, _behave  # noqa: E402
from flywheel.lab.worlds import load_world  # noqa: E402
from flywheel.models.loading import load_model  # noqa: E402
from flywheel.scoring.interleaving import credit, interleave, team_draft  # noqa: E402
from flywheel.scoring.sequential import mean_difference_test, win_share_test  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

K = 10
BOOSTS = (0.005, 0.01, 0.02, 0.05)
NOISE = 0.01  # the exchangeable null's noise on the cosine
POOL = 20  # noisy rankings each side of the exchangeable null draws from, per search

Ranker = list[dict[str, list[str]]]  # one ranking per draw; a deterministic ranker has one
AB_EVERY = 10  # the A/B test looks after every 10 searches (it is valid at any cadence; this saves time)


def rankings(
    world: Any, vec: dict[str, np.ndarray], boost: float, noise_seed: int | None = None
) -> dict[str, list[str]]:
    """Query id -> top-K doc ids, cosine plus `boost` on each judged-relevant document (plus Gaussian noise of
    scale NOISE when `noise_seed` is given)."""
    queries = {**world.traffic_queries, **world.check_queries}
    relevant = {**world.traffic_relevant, **world.check_relevant}
    ids = [d.id for d in world.corpus]
    row = {d: i for i, d in enumerate(ids)}
    docs = np.stack([vec[d.text] for d in world.corpus])
    qids = sorted(queries)
    scores = np.stack([vec[queries[q]] for q in qids]) @ docs.T
    if noise_seed is not None:
        scores += np.random.default_rng(noise_seed).normal(0, NOISE, scores.shape)
    for i, q in enumerate(qids):
        for d in relevant.get(q, ()):
            if d in row:
                scores[i, row[d]] += boost
    top = np.argsort(-scores, axis=1)[:, :K]
    return {q: [ids[j] for j in top[i]] for i, q in enumerate(qids)}


def mean_ndcg(ranker: Ranker, relevant: dict[str, set[str]]) -> float:
    """Mean binary nDCG@10 over the queries (and draws), against their judgements (as the reports compute it)."""
    discounts = 1.0 / np.log2(np.arange(2, K + 2))
    values = []
    for ranked in ranker:
        for q, hits in ranked.items():
            gains = np.array([d in relevant[q] for d in hits], float)
            values.append((gains * discounts[: gains.size]).sum() / discounts[: min(len(relevant[q]), K)].sum())
    return float(np.mean(values))


def draw(ranker: Ranker, rng: random.Random) -> dict[str, list[str]]:
    """The ranking one search gets from a ranker."""
    return ranker[0] if len(ranker) == 1 else ranker[rng.randrange(len(ranker))]


def clicks(hits: list[str], relevant: set[str], rng: random.Random) -> list[tuple[str, str]]:
    """(doc id, event type) of one simulated user's reaction to a list (the project's own user model)."""
    body = {"search_id": "bench", "hits": [{"doc_id": d} for d in hits]}
    return [(e["doc_id"], e["type"]) for e in _behave(body, relevant, DEMO_USER, rng, SimulationStats())]


def reciprocal_rank(hits: list[str], events: list[tuple[str, str]]) -> float:
    """1 / rank of the first clicked result, 0 without a click."""
    clicked = {d for d, t in events if t == "click"}
    return next((1.0 / r for r, d in enumerate(hits, 1) if d in clicked), 0.0)


def interleaving_run(
    inc: Ranker, cha: Ranker, relevant: dict, qids: list[str], max_n: int, seed: int, plain: bool = False
) -> tuple[str, int]:
    """One interleaving experiment: (decision or "undecided", searches used); `plain` credits every click, the
    common prefix's too (bare team draft)."""
    merge = team_draft if plain else interleave
    rng = random.Random(seed)
    wins = losses = 0
    for n in range(1, max_n + 1):
        q = rng.choice(qids)
        merged = merge(draw(inc, rng)[q], draw(cha, rng)[q], K, seed=f"{seed}:{n}")
        events = clicks([d for d, _ in merged], relevant[q], rng)
        outcome = credit(dict(merged), events)
        if outcome in ("win", "loss"):
            wins += outcome == "win"
            losses += outcome == "loss"
            verdict = win_share_test(wins, losses)
            if verdict.decision:
                return verdict.decision, n
    return "undecided", max_n


def ab_run(
    inc: Ranker, cha: Ranker, relevant: dict, qids: list[str], max_n: int, seed: int, tau: float
) -> tuple[str, int]:
    """One user-split A/B experiment on the reciprocal rank of clicks: (decision or "undecided", searches)."""
    rng = random.Random(seed)
    sums, squares, counts = [0.0, 0.0], [0.0, 0.0], [0, 0]
    for n in range(1, max_n + 1):
        q, arm = rng.choice(qids), rng.random() < 0.5
        hits = draw(cha if arm else inc, rng)[q]
        rr = reciprocal_rank(hits, clicks(hits, relevant[q], rng))
        sums[arm] += rr
        squares[arm] += rr * rr
        counts[arm] += 1
        if n % AB_EVERY or min(counts) < 2:
            continue
        means = [s / c for s, c in zip(sums, counts, strict=True)]
        total = sum(counts)
        variance = (sum(squares) - sum(m * m * c for m, c in zip(means, counts, strict=True))) / (total - 2)
        verdict = mean_difference_test(means[0], means[1], variance, counts[0], counts[1], tau)
        if verdict.decision:
            return verdict.decision, n
    return "undecided", max_n


def true_mrr(ranker: Ranker, relevant: dict, qids: list[str], n: int = 40000) -> float:
    """The mean reciprocal rank of clicks a ranker gets from these users (a large simulation)."""
    rng = random.Random(12345)
    total = 0.0
    for _ in range(n):
        q = rng.choice(qids)
        ranked = draw(ranker, rng)[q]
        total += reciprocal_rank(ranked, clicks(ranked, relevant[q], rng))
    return total / n


def summarise(results: list[tuple[str, int]], max_n: int) -> dict[str, Any]:
    """Share deciding for the challenger / the incumbent, and the median searches to a decision."""
    decisions = [d for d, _ in results]
    return {
        "runs": len(results),
        "challenger": decisions.count("challenger") / len(results),
        "incumbent": decisions.count("incumbent") / len(results),
        "undecided": decisions.count("undecided") / len(results),
        "median_searches": float(np.median([n for _, n in results])),
        "max_searches": max_n,
    }


def _censored(block: dict[str, Any]) -> bool:
    """True when at least half the runs hit the limit undecided: the median is then only a lower bound."""
    return block["median_searches"] >= block["max_searches"]


def _median(block: dict[str, Any]) -> str:
    """The median searches, marked as a lower bound when censored by the limit."""
    return f"{'>= ' if _censored(block) else ''}{block['median_searches']:,.0f}"


def chart(rows: list[dict[str, Any]], path: Path) -> None:
    """Median searches to a decision by true nDCG@10 gain, interleaving vs A/B (log scale)."""
    from matplotlib.figure import Figure

    better = [r for r in rows if r["kind"] == "better"]
    fig = Figure(figsize=(6.5, 3.2))
    ax = fig.subplots()
    gains = [r["ndcg_gain"] for r in better]
    ax.plot(gains, [r["interleaving"]["median_searches"] for r in better], "o-", label="team-draft interleaving")
    ax.plot(gains, [r["ab"]["median_searches"] for r in better], "s--", label="A/B on MRR of clicks")
    limit = better[0]["ab"]["max_searches"]
    ax.axhline(limit, color="#8c959f", linewidth=1, linestyle=":", label="search limit (median at it: more)")
    ax.set_yscale("log")
    ax.set_xlabel("true nDCG@10 gain of the challenger (SciFact, all claims)")
    ax.set_ylabel("median searches to decide")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, frameon=False)
    fig.savefig(path, dpi=120, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="experiments per better challenger")
    parser.add_argument("--null-runs", type=int, default=400, help="experiments per null row")
    parser.add_argument("--max-searches", type=int, default=50000, help="limit of an experiment")
    parser.add_argument("--null-max-searches", type=int, default=20000, help="limit of a null row's experiment")
    parser.add_argument(
        "--plain-team-draft", action="store_true", help="credit clicks on the common prefix too (bare team draft)"
    )
    parser.add_argument("--out", default="online_test", help="name of the result files in bench/results")
    args = parser.parse_args()

    started = time.monotonic()
    world = load_world("scifact")
    vec = base_vectors(world, load_model(packaged_model_path(), "cpu"))
    relevant = {**world.traffic_relevant, **world.check_relevant}
    base = [rankings(world, vec, 0.0)]
    qids = sorted(base[0])
    base_ndcg = mean_ndcg(base, relevant)
    noisy = [rankings(world, vec, 0.0, noise_seed=s) for s in range(POOL)]
    cases = [("identical", 0.0, base, base), ("exchangeable", 0.0, noisy, noisy)]
    cases += [("better", boost, base, [rankings(world, vec, boost)]) for boost in BOOSTS]
    # The null rows' A/B prior: the MRR gain of the smallest real effect (what one would hope to detect).
    smallest_mrr_gain = true_mrr(cases[2][3], relevant, qids) - true_mrr(base, relevant, qids)
    rows = []
    for kind, boost, incumbent, challenger in cases:
        gain = mean_ndcg(challenger, relevant) - mean_ndcg(incumbent, relevant)
        mrr_gain = true_mrr(challenger, relevant, qids) - true_mrr(incumbent, relevant, qids)
        tau = max(abs(mrr_gain), 1e-3) if kind == "better" else abs(smallest_mrr_gain)
        runs, limit = (args.runs, args.max_searches) if kind == "better" else (args.null_runs, args.null_max_searches)
        inter = [
            interleaving_run(incumbent, challenger, relevant, qids, limit, s, args.plain_team_draft)
            for s in range(runs)
        ]
        ab = [ab_run(incumbent, challenger, relevant, qids, limit, s, tau) for s in range(runs)]
        row = {
            "kind": kind,
            "boost": boost,
            "ndcg_gain": round(gain, 4),
            "mrr_gain": round(mrr_gain, 4),
            "interleaving": summarise(inter, limit),
            "ab": summarise(ab, limit),
        }
        row["ratio"] = round(row["ab"]["median_searches"] / row["interleaving"]["median_searches"], 1)
        rows.append(row)
        print(f"{kind} {boost}: done in {time.monotonic() - started:.0f} s", file=sys.stderr)

    print(f"SciFact, {len(qids)} claims, base nDCG@10 {base_ndcg:.3f}, users {DEMO_USER}")
    print(
        "| challenger | true nDCG@10 gain | MRR-of-clicks gain | interleaving: decides for challenger "
        "| median searches | A/B: decides for challenger | median searches | A/B / interleaving |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        i, a = r["interleaving"], r["ab"]
        name = r["kind"] if r["kind"] != "better" else f"boost {r['boost']}"
        print(
            f"| {name} | {r['ndcg_gain']:+.3f} | {r['mrr_gain']:+.4f} "
            f"| {i['challenger']:.0%} (wrong way {i['incumbent']:.0%}) "
            f"| {_median(i)} | {a['challenger']:.0%} (wrong way {a['incumbent']:.0%}) "
            f"| {_median(a)} | {'>= ' if _censored(a) else ''}{r['ratio']}x |"
        )
    RESULTS.mkdir(exist_ok=True)
    out = {
        "world": "scifact",
        "claims": len(qids),
        "base_ndcg@10": round(base_ndcg, 4),
        "alpha": 0.05,
        "max_searches": args.max_searches,
        "null_max_searches": args.null_max_searches,
        "plain_team_draft": args.plain_team_draft,
        "rows": rows,
        "seconds": round(time.monotonic() - started, 1),
    }
    (RESULTS / f"{args.out}.json").write_text(json.dumps(out, indent=2) + "\n")
    chart(rows, RESULTS / f"{args.out}.png")


if __name__ == "__main__":
    main()
