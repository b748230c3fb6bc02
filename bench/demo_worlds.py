"""Why the demo's cycle is rejected: simulated Quora worlds x seeds, one real adapter cycle each.

Each world is simulated in bulk with the rows `POST /search` writes (exact top 10 of cached base vectors, the
base query vector with each search; see bench/adapter_vs_full.py), events go through `Service.feedback`, and
then one real adapter cycle runs (`run_adapter_cycle`: mining, split, training, gate). The baseline is the
incumbent (the packaged MiniLM) on the same held-out feedback, in the same run. Worlds:

- demo: the shipped demo set (duplicate clusters as judgements, other train-pool questions as fill);
- no-fill: the same queries, corpus = judged documents only (fewer unlabelled duplicates to skip);
- keywords: the demo's queries typed as keywords (stop words dropped), as chat users often do;
- single-duplicate: each query's one labelled duplicate is its only answer (bench/adapter_vs_full.py's world);
- did-you-mean: raw train-pool pairs as suggestions: question2 answers question1 when Quora says duplicate,
  and users give a thumbs-down (7 times in 10) to a suggestion Quora labels non-duplicate (clean, labelled negatives).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/demo_worlds.py [--seeds 0,1,2] [--queries 3500]

Prints a table and writes bench/results/demo_worlds.json.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import adapter_vs_full as avf  # noqa: E402
import numpy as np  # noqa: E402
from compare_losses import DATA, CachedEncoder, cached_embeddings, duplicate_clusters  # noqa: E402

import flywheel.lab.simulate as simulate  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
STOP = set(
    "what how why which who whom whose when where is are was were be been do does did can could should would will "
    "shall may might the a an i me my you your to of in on for and or it its that this there their they we our with "
    "as at by from about into any some if than then so not".split()
)
World = tuple[dict[str, str], dict[str, str], dict[str, set[str]], dict[str, set[str]]]  # queries, corpus, rel, neg


def demo_world(n: int, fill: bool = True) -> World:
    """The shipped demo set (first `n` queries); without fill the corpus is the judged documents only."""
    from flywheel.lab.demo import load_world

    world = load_world()
    queries = dict(list(world.queries.items())[:n])
    relevant = {q: set(world.relevant[q]) for q in queries}
    judged = {d for docs in relevant.values() for d in docs}
    corpus = {d.id: d.text for d in world.corpus if fill or d.id in judged}
    return queries, corpus, relevant, {}


def keyword_world(n: int) -> World:
    """The demo set with keyword queries ("how can i lose weight fast?" -> "lose weight fast")."""
    queries, corpus, relevant, _ = demo_world(n)

    def keywords(text: str) -> str:
        kept = [w for w in re.findall(r"[a-z0-9+#']+", text.lower()) if w not in STOP]
        return " ".join(kept) or text.lower()

    return {q: keywords(t) for q, t in queries.items()}, corpus, relevant, {}


def single_duplicate_world(n: int, seed: int) -> World:
    """bench/adapter_vs_full.py's world at the demo's corpus size."""
    queries, corpus, relevant, _, _ = avf.build_world(n, 5500, seed)
    return queries, corpus, relevant, {}


def did_you_mean_world(n: int, seed: int = 11) -> World:
    """Raw train-pool pairs as (question, suggested question), judged both ways by Quora's labels."""
    with gzip.open(DATA / "train_pool.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    rows = [r for r in rows if r["text_form"] == "raw" and r["qkey1"] != r["qkey2"]]
    cluster = duplicate_clusters(rows)
    find = lambda key: cluster.get(key, key)  # noqa: E731 - a question in no duplicate pair is its own cluster
    random.Random(seed).shuffle(rows)
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, set[str]] = {}
    negative: dict[str, set[str]] = {}
    for r in rows:
        if len(queries) >= n:
            break
        q, d = r["qkey1"], r["qkey2"]
        if q in corpus or d in queries or q in queries:
            continue
        queries[q], corpus[d] = r["question1"], r["question2"]
        relevant[q] = {d} if r["is_duplicate"] else set()
        if not r["is_duplicate"]:
            negative[q] = {d}
    members: dict[str, set[str]] = {}
    for d in corpus:
        members.setdefault(find(d), set()).add(d)
    for q in queries:  # duplicates of duplicates are duplicates: judgements closed over the clusters
        relevant[q] |= members.get(find(q), set()) - negative.get(q, set())
    return queries, corpus, relevant, negative


def vectors(world: World, base: CachedEncoder) -> tuple[np.ndarray, dict[str, int], list[str]]:
    """Base vectors of every query and document (cached on disk), and the row of each id."""
    queries, corpus, _, _ = world
    keys = [f"q:{k}" for k in queries] + [f"d:{k}" for k in corpus]
    texts = list(queries.values()) + list(corpus.values())
    emb = cached_embeddings(base, texts, avf.CACHE)
    row = {k: i for i, k in enumerate(keys)}
    return emb, row, texts


def thumbs_down_user(negative: dict[str, set[str]], probability: float) -> Any:
    """`simulate._behave` plus a thumbs-down for each judged non-duplicate the user reads."""
    cascade = simulate._behave  # the original: write_log will find this wrapper in its place

    def behave(body: dict[str, Any], relevant: set[str], user: Any, rng: random.Random, stats: Any) -> list:
        events = cascade(body, relevant, user, rng, stats)
        clicked = [e["doc_id"] for e in events if e["type"] == "click"]
        read = [h["doc_id"] for h in body["hits"]]
        read = read[: read.index(clicked[0])] if clicked else read
        judged = negative.get(body["search_id"].split("-", 1)[1], set())
        down = [simulate._event(body["search_id"], d, "thumbs_down") for d in read if d in judged]
        return events + [e for e in down if rng.random() < probability]

    return behave


def dev_vectors(base: CachedEncoder) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """The shared Quora dev pairs and the base vectors of their two sides (an independent check of a candidate)."""
    from flywheel.formats.pairs import load_labelled_pairs, pair_texts

    dev = load_labelled_pairs(DATA / "dev.jsonl.gz")
    texts = pair_texts(dev)
    emb = cached_embeddings(base, texts, avf.CACHE)
    row = {t: i for i, t in enumerate(texts)}
    return dev, emb[[row[p.query] for p in dev]], emb[[row[p.document] for p in dev]]


def dev_change(adapter: Any, dev: tuple[list[Any], np.ndarray, np.ndarray]) -> dict[str, Any] | None:
    """Dev pair error of a promoted adapter vs the base (paired CI); None when nothing was promoted."""
    from flywheel.scoring.pair_error import compare_scored

    if adapter is None:
        return None
    pairs, q, d = dev
    out = compare_scored(pairs, (q * d).sum(1), (adapter.apply(q) * d).sum(1), seed=0)
    return {
        "base": out["incumbent"]["error_rate"],
        "candidate": out["candidate"]["error_rate"],
        "ci95": out["delta_ci95"],
    }


def run_world(
    name: str, world: World, base: CachedEncoder, seed: int, dev: tuple[list[Any], np.ndarray, np.ndarray]
) -> dict[str, Any]:
    """Simulate one world with one seed, run one real adapter cycle on it, and check a promoted adapter on dev."""
    from flywheel.config import Settings
    from flywheel.cycle.adapter import run_adapter_cycle
    from flywheel.serve.service import Service

    queries, corpus, relevant, negative = world
    emb, row, _ = vectors(world, base)
    # write_log looks queries and documents up by id in one row map: prefix them apart.
    prefixed = (
        {f"q:{k}": v for k, v in queries.items()},
        {f"d:{k}": v for k, v in corpus.items()},
        {f"q:{k}": {f"d:{d}" for d in v} for k, v in relevant.items()},
        row,
        [],
    )
    neg = {f"q:{k}": {f"d:{d}" for d in v} for k, v in negative.items()}
    root = Path(tempfile.mkdtemp(prefix="flywheel-demo-worlds-"))
    original = simulate._behave
    try:
        if neg:
            simulate._behave = thumbs_down_user(neg, 0.7)
        service = Service.open(Settings(data_dir=root, base_model="", device="cpu", seed=seed, heldout_percent=40))
        sim = avf.write_log(service, prefixed, emb, 1, seed)
        simulate._behave = original
        started = time.perf_counter()
        report = run_adapter_cycle(service, f"{name}-{seed}").to_json()
        promoted = service.adapter if report["decision"] == "promoted" else None
        service.close()
    finally:
        simulate._behave = original
        shutil.rmtree(root, ignore_errors=True)
    pair = report["metrics"].get("pair_error") or {}
    ndcg = (report["metrics"].get("retrieval") or {}).get("ndcg@10") or {}
    counts = report.get("counts") or {}
    return {
        "world": name,
        "seed": seed,
        "queries": len(queries),
        "corpus": len(corpus),
        "simulation": sim,
        "pairs": {k: counts.get(k) for k in ("positives", "negatives", "train_pairs", "heldout_pairs")},
        "incumbent": (pair.get("incumbent") or {}).get("error_rate"),
        "candidate": (pair.get("candidate") or {}).get("error_rate"),
        "delta_ci95": pair.get("delta_ci95"),
        "ndcg_delta": ndcg.get("delta"),
        "decision": report["decision"],
        "dev_pair_error": dev_change(promoted, dev),
        "cycle_s": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--queries", type=int, default=3500)
    parser.add_argument("--worlds", default="demo,no-fill,keywords,single-duplicate,did-you-mean")
    parser.add_argument("--out", type=Path, default=RESULTS / "demo_worlds.json")
    args = parser.parse_args()
    from flywheel.models.loading import load_model

    base = CachedEncoder(load_model("all-MiniLM-L6-v2", device="cpu"))
    builders = {
        "demo": lambda s: demo_world(args.queries),
        "no-fill": lambda s: demo_world(args.queries, fill=False),
        "keywords": lambda s: keyword_world(args.queries),
        "single-duplicate": lambda s: single_duplicate_world(args.queries, s),
        "did-you-mean": lambda s: did_you_mean_world(args.queries),
    }
    dev = dev_vectors(base)
    results = []
    for name in args.worlds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            line = run_world(name, builders[name](seed), base, seed, dev)
            print(json.dumps(line), flush=True)
            results.append(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": "2 CPU cores, no GPU", "runs": results}, indent=2))
    print(
        "\n| world | seed | positive / negative pairs | held-out error: incumbent -> candidate "
        "| change, 95% CI | nDCG@10 change | decision | promoted adapter on Quora dev: change, 95% CI |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        ci = r["delta_ci95"] or [float("nan")] * 2
        nd = f"{r['ndcg_delta']:+.3f}" if r["ndcg_delta"] is not None else "-"
        print(
            f"| {r['world']} | {r['seed']} | {r['pairs']['positives']} / {r['pairs']['negatives']} "
            f"| {r['incumbent'] * 100:.1f}% -> {r['candidate'] * 100:.1f}% "
            f"| {ci[0] * 100:+.1f}..{ci[1] * 100:+.1f} pt | {nd} | {r['decision']} | {_dev(r['dev_pair_error'])} |"
        )


def _dev(change: dict[str, Any] | None) -> str:
    """A promoted adapter's dev change as "+x.x pt (lo..hi)", or "-" when nothing was promoted."""
    if change is None:
        return "-"
    lo, hi = change["ci95"]
    return f"{(change['candidate'] - change['base']) * 100:+.1f} pt ({lo * 100:+.1f}..{hi * 100:+.1f})"


if __name__ == "__main__":
    main()
