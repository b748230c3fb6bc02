"""Which learner earns most from clicks: worlds x traffic x learners, judged on check queries and next traffic.

For each world (SciFact, Quora) and traffic (uniform: every traffic query `--rounds` times; zipf: popular
questions come back) a fresh data dir gets the corpus and simulated traffic, written in bulk with the rows
`POST /search` writes (exact top 10 of the base vectors, the base query vector, searches in time order) and
events through `Service.feedback`; the users are the demo's (position-based examination 1/r, 5% misclicks,
5% who leave). Then, on the same mined data and the cycle's own split, each learner is trained the way an
adapter cycle trains it, and judged against the base (the incumbent) with paired 95% bootstrap CIs:

- check: the world's check queries (never asked), nDCG@10 against the judgements;
- next (truth): every search of the next-traffic window (from the first of the latest 20% of searches with
  feedback on, as they came, repeats and searches nobody clicked included), each judged by its query's
  relevance labels rather than its clicks: what the users of next week get, which only a simulation can know;
- next: the next-traffic view the gate reads (the latest 20% of searches, their clicks as relevant);
- unseen: the unseen-queries view (held-out query groups, their clicks as relevant);
- judged: the same two views with each query ranking only the documents its feedback judged (what the gate
  reads by default: documents nobody was shown carry no judgement).

Learners: base (the incumbent itself), in-batch adapter (the previous default), corpus adapter (softmax over
the whole index), debiased adapter (corpus, clicks weighted by inverse estimated propensity), memory (query
memory alone), adapter+memory (corpus adapter then memory, the default), full fine-tune (what a full cycle
trains with the default settings, on the same training rows, then the whole corpus re-embedded; judged on the
check queries and next traffic by true labels only, the judged views being the adapter gate's).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/learners.py [--worlds scifact,quora] [--traffic uniform,zipf] [--seeds 0] \
        [--learners base,...] [--explore 0,0.25] [--out bench/results/learners.json]

`--explore` simulates the service's exploration (`FLYWHEEL_EXPLORE_SHARE`; `--explore-slots`,
`--explore-depth` and `--explore-repeats` as `FLYWHEEL_EXPLORE_SLOTS` / `_DEPTH` / `_REPEATS`) at each share
given: the table then also shows the nDCG@10 of what users were shown (the cost) and the simulation counts
the clicks on documents shown only because their search explored.

Prints a table and writes bench/results/learners.json. Base vectors are cached in bench/.cache (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from flywheel.config import Settings  # noqa: E402
from flywheel.cycle.adapter import gather_vectors, train_learner, training_arrays  # noqa: E402
from flywheel.cycle.evaluation import arrival_key, next_traffic_view, unseen_view  # noqa: E402
from flywheel.cycle.report.model import CycleReport  # noqa: E402
from flywheel.cycle.steps import mine_and_split  # noqa: E402
from flywheel.lab.demo import DEMO_USER  # noqa: E402
from flywheel.lab.simulate import SimulationStats, Traffic, _behave, query_sequence  # noqa: E402
from flywheel.lab.worlds import World, load_world  # noqa: E402
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter, normalise  # noqa: E402
from flywheel.scoring.exploration import AskCounts, Exploration  # noqa: E402
from flywheel.scoring.ranking import compare_scores, retrieval_scores  # noqa: E402
from flywheel.serve.service import Service  # noqa: E402
from flywheel.serve.store import encode_vector  # noqa: E402
from flywheel.types import Event  # noqa: E402
from flywheel.util.files import utcnow  # noqa: E402
from flywheel.util.packaged import packaged_model_path  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CACHE = Path(__file__).resolve().parent / ".cache"
LEARNERS = (
    "base",
    "in-batch adapter",
    "corpus adapter",
    "debiased adapter",
    "memory",
    "adapter+memory",
    "full fine-tune",
)


def base_vectors(world: World, model: Any) -> dict[str, np.ndarray]:
    """Unit base vectors of every document and query text of a world, cached on disk by world name."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"{world.name}-minilm.npz"
    texts = [d.text for d in world.corpus] + list(world.traffic_queries.values()) + list(world.check_queries.values())
    texts = list(dict.fromkeys(texts))
    if path.exists():
        stored = np.load(path, allow_pickle=True)
        if list(stored["texts"]) == texts:
            return dict(zip(texts, stored["vectors"], strict=True))
    vectors = normalise(model.encode(texts, batch_size=64, show_progress_bar=True))
    np.savez(path, texts=np.array(texts, dtype=object), vectors=vectors)
    return dict(zip(texts, vectors, strict=True))


def worlds_with_vectors(names: str) -> Iterator[tuple[World, dict[str, np.ndarray]]]:
    """Each named world (comma-separated) with its cached base vectors; the model loads once, if needed."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(packaged_model_path(), device="cpu")
    for name in names.split(","):
        world = load_world(name)
        yield world, base_vectors(world, model)


def write_results(out: Path, payload: dict[str, Any]) -> None:
    """Write a bench's results as JSON, with the command that made them."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**payload, "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"wrote {out}")


def write_traffic(
    service: Service, world: World, vec: dict, traffic: Traffic, seed: int, exploration: Exploration | None = None
) -> dict[str, float]:
    """Ingest the corpus with cached vectors; log the simulated searches (in time order) and their events.

    With `exploration`, its share of searches shows what the service would show (`Exploration.arrange`);
    `shown_ndcg` is the mean nDCG@10 of the lists users saw, by their queries' true labels (the cost), and
    `explored_clicks` the clicks on documents shown only because their search explored (the gain)."""
    import pyarrow as pa

    ids = [d.id for d in world.corpus]
    doc_vectors = np.stack([vec[d.text] for d in world.corpus])
    with service.store.transaction() as con:
        service.store.upsert_documents(con, list(world.corpus))
    service.index.upsert("v1", list(world.corpus), doc_vectors)
    user, rng, stats = traffic.user, random.Random(seed), SimulationStats()
    order = query_sequence(world.traffic_queries, traffic, seed)
    qids = sorted(set(order))
    q_vectors = np.stack([vec[world.traffic_queries[q]] for q in qids])
    exploration = exploration or Exploration()
    top = np.argsort(-(q_vectors @ doc_vectors.T), axis=1)[:, : exploration.fetch(user.k)]
    shown_ndcg: list[float] = []
    explored_clicks = 0
    row = {q: i for i, q in enumerate(qids)}
    asked = AskCounts()  # what the service counts for FLYWHEEL_EXPLORE_REPEATS
    start = utcnow() - timedelta(seconds=len(order))
    cols: dict[str, list] = {c: [] for c in ("search_id", "query", "query_vector", "ts")}
    imps: dict[str, list] = {c: [] for c in ("search_id", "rank", "doc_id", "score")}
    events: list[Event] = []
    for n, qid in enumerate(order):
        sid, i = f"s{n:07d}", row[qid]
        cols["search_id"].append(sid)
        cols["query"].append(world.traffic_queries[qid])
        cols["query_vector"].append(encode_vector(q_vectors[i]))
        cols["ts"].append(start + timedelta(seconds=n))  # one search a second: the log keeps their order
        ranked = [int(j) for j in top[i]]
        explores = exploration.explores(sid, user.k, asked.see(world.traffic_queries[qid]))
        shown = exploration.arrange(ranked, user.k, sid) if explores else ranked[: user.k]
        hits = [{"doc_id": ids[j], "score": float(q_vectors[i] @ doc_vectors[j])} for j in shown]
        shown_ndcg.append(_ndcg([h["doc_id"] for h in hits], world.traffic_relevant[qid]))
        below = {ids[j] for j in ranked[user.k :]}  # shown only because this search explored
        for rank, h in enumerate(hits, start=1):
            for key, value in (("search_id", sid), ("rank", rank), ("doc_id", h["doc_id"]), ("score", h["score"])):
                imps[key].append(value)
        for e in _behave({"search_id": sid, "hits": hits}, world.traffic_relevant[qid], user, rng, stats):
            events.append(Event(e["event_id"], e["search_id"], e["doc_id"], e["type"]))
            explored_clicks += e["type"] == "click" and e["doc_id"] in below
        stats.searches += 1
    n = len(order)
    table = pa.table({**cols, "ts": pa.array(cols["ts"], pa.timestamp("us")), "k": pa.array([user.k] * n, pa.int32())})
    with service.store.transaction() as con:
        con.register("_s", table)
        con.register("_i", pa.table(imps))
        con.execute(
            "INSERT INTO searches (search_id, ts, query, k, model_version, query_vector, vector_version) "
            "SELECT search_id, ts, query, k, 'v1', query_vector, 'v1' FROM _s"
        ).fetchall()
        con.execute(
            "INSERT INTO impressions (search_id, rank, doc_id, score) SELECT search_id, rank, doc_id, score FROM _i"
        ).fetchall()
    for begin in range(0, len(events), 5000):
        service.feedback(events[begin : begin + 5000])
    stats.distinct_queries = len(qids)
    kept = ("searches", "distinct_queries", "clicks", "wrong_clicks")
    shown = {"shown_ndcg": round(float(np.mean(shown_ndcg)), 4), "explored_clicks": explored_clicks}
    return {**{k: v for k, v in vars(stats).items() if k in kept}, **shown}


def _ndcg(shown: list[str], relevant: set[str], k: int = 10) -> float:
    """nDCG@k of one shown list against binary labels."""
    dcg = sum(1 / np.log2(r + 2) for r, d in enumerate(shown[:k]) if d in relevant)
    ideal = sum(1 / np.log2(r + 2) for r in range(min(len(relevant), k)))
    return float(dcg / ideal) if ideal else 0.0


def settings_for(learner: str, base: Settings) -> Settings | None:
    """The settings an adapter cycle would train `learner` with (None for the base itself)."""
    choices = {
        "in-batch adapter": {"adapter_learner": "adapter", "adapter_negatives": "in-batch", "adapter_debias": False},
        "corpus adapter": {"adapter_learner": "adapter", "adapter_debias": False},
        "debiased adapter": {"adapter_learner": "adapter", "adapter_debias": True},
        "memory": {"adapter_learner": "memory"},
        "adapter+memory": {"adapter_learner": "adapter+memory", "adapter_debias": False},
    }
    return None if learner == "base" else base.model_copy(update=choices[learner])


def judge(world: World, vec: dict, cache: Any, candidate: QueryAdapter | None, seed: int) -> dict[str, np.ndarray]:
    """Per-query nDCG@10 of base + `candidate` on the check queries (judged), over the whole collection."""
    encode = lambda texts: np.stack([vec[t] for t in texts])  # noqa: E731
    side = AdaptedQueries(cache.base, encode, candidate)
    corpus = dict.fromkeys(cache.doc_ids, "")
    return retrieval_scores(side, world.check_queries, corpus, world.check_relevant, 10, cache.docs)


def judge_next(
    world: World, vec: dict, cache: Any, candidate: QueryAdapter | None, searches: list[tuple[str, str]]
) -> dict:
    """Per-search nDCG@10 of base + `candidate` on every search of the next-traffic window (with feedback or
    not), each judged by its query's true relevance labels (not its clicks), over the whole collection:
    traffic-weighted, repeats included."""
    searches = [(arrival_key(n), query) for n, (_, query) in enumerate(searches)]  # as the gate keys them
    encode = lambda texts: np.stack([vec[t] for t in texts])  # noqa: E731
    side = AdaptedQueries(cache.base, encode, candidate)
    corpus = dict.fromkeys(cache.doc_ids, "")
    return retrieval_scores(side, dict(searches), corpus, next_relevant(world, searches), 10, cache.docs)


def next_relevant(world: World, searches: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Search id -> the true relevant documents of its query (a traffic query)."""
    qid_of = {text: qid for qid, text in world.traffic_queries.items()}
    return {sid: world.traffic_relevant[qid_of[query]] for sid, query in searches}


def traffic_for(world: World, name: str) -> Traffic:
    """The benches' traffic: three uniform passes over the traffic queries, or as many Zipf-drawn searches."""
    if name == "zipf":
        return Traffic(popularity="zipf", searches=3 * len(world.traffic_queries), user=DEMO_USER)
    return Traffic(popularity=name, rounds=3, user=DEMO_USER)


@dataclass
class SimulatedLog:
    """One simulated log, mined as an adapter cycle mines it (the data dir is gone; vectors are cached)."""

    settings: Settings
    simulation: dict[str, float]
    train_rows: list
    heldout_rows: list
    cache: Any  # flywheel.cycle.adapter.CachedVectors
    window: list[tuple[str, str]]  # (search id, query) of every search of the next-traffic window


def simulated_log(
    world: World, vec: dict, traffic_name: str, seed: int, exploration: Exploration | None = None
) -> SimulatedLog:
    """Simulate `traffic_name` on a fresh data dir and mine it with the cycle's own split."""
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), base_model=packaged_model_path(), seed=seed)
        service = Service.open(settings)
        try:
            sim = write_traffic(service, world, vec, traffic_for(world, traffic_name), seed, exploration)
            report = CycleReport(cycle_id="bench", created_at="", kind="adapter")
            mined, train_rows, heldout_rows = mine_and_split(service, service.encoder, report)
            cache = gather_vectors(service, service.encoder, mined.pairs, (s.query for s in mined.next_traffic))
            window = service.store.query(
                "SELECT search_id, query FROM searches WHERE ts >= ? ORDER BY ts", [mined.next_traffic_start]
            )
        finally:
            service.close()
    return SimulatedLog(settings, sim, train_rows, heldout_rows, cache, window)


def run_cell(
    world: World, vec: dict, traffic_name: str, seed: int, learners: list[str], explore: Exploration | None = None
) -> list[dict[str, Any]]:
    """One world x traffic x seed: simulate once, then train and judge every learner on the same data."""
    traffic = traffic_for(world, traffic_name)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flywheel-learners-") as tmp:
        settings = Settings(data_dir=Path(tmp), base_model=packaged_model_path(), seed=seed)
        service = Service.open(settings)
        try:
            explore = explore or Exploration()
            sim = write_traffic(service, world, vec, traffic, seed, explore)
            report = CycleReport(cycle_id="bench", created_at="", kind="adapter")
            mined, train_rows, heldout_rows = mine_and_split(service, service.encoder, report)
            cache = gather_vectors(service, service.encoder, mined.pairs, (s.query for s in mined.next_traffic))
            arrays = training_arrays(train_rows, cache)
            base_check = judge(world, vec, cache, None, seed)
            # Every search since the window began (the loop holds out those with feedback; users asked them all).
            window = service.store.query(
                "SELECT search_id, query FROM searches WHERE ts >= ? ORDER BY ts", [mined.next_traffic_start]
            )
            base_next = judge_next(world, vec, cache, None, window)
            for learner in learners:
                if learner == "full fine-tune":
                    bases = (base_check, base_next)
                    rows.append(full_row(world, cache, train_rows, settings, Path(tmp), bases, window))
                    rows[-1].update(
                        traffic=traffic_name, seed=seed, explore=explore.share, simulation=sim, counts=mined.counts
                    )
                    print(_line(rows[-1]), flush=True)
                    continue
                chosen = settings_for(learner, settings)
                t0 = time.monotonic()
                candidate = train_learner(arrays, cache, chosen, "cand")[0] if chosen else None
                seconds = time.monotonic() - t0
                sides = {
                    "incumbent": AdaptedQueries(cache.base, cache.query_matrix, None),
                    "candidate": AdaptedQueries(cache.base, cache.query_matrix, candidate),
                }
                corpus = dict.fromkeys(cache.doc_ids, "")

                def score(
                    side: str,
                    q: dict,
                    rel: dict,
                    judged: dict | None = None,
                    sides: dict = sides,
                    corpus: dict = corpus,
                ) -> dict:
                    return retrieval_scores(sides[side], q, corpus, rel, 10, cache.docs, judged)

                check = compare_scores(base_check, judge(world, vec, cache, candidate, seed), seed=seed)
                next_truth = compare_scores(base_next, judge_next(world, vec, cache, candidate, window), seed=seed)
                views = {
                    "unseen": unseen_view(score, heldout_rows, train_rows, seed, mined.shown),
                    "next": next_traffic_view(score, mined.next_traffic, train_rows, seed),
                }
                rows.append(
                    {
                        "world": world.name,
                        "traffic": traffic_name,
                        "seed": seed,
                        "learner": learner,
                        "explore": explore.share,
                        "explore_slots": explore.slots,
                        "explore_depth": explore.depth,
                        "explore_repeats": explore.repeats,
                        "train_s": round(seconds, 2),
                        "check": _summary(check),
                        "next_truth": _summary(next_truth),
                        **{name: _summary(view) for name, view in views.items()},
                        **{f"{name}_judged": _summary(view and view["judged"]) for name, view in views.items()},
                        "simulation": sim,
                        "counts": mined.counts,
                    }
                )
                print(_line(rows[-1]), flush=True)
        finally:
            service.close()
    return rows


def full_row(
    world: World,
    cache: Any,
    train_rows: list,
    settings: Settings,
    tmp: Path,
    base_scores: tuple[dict, dict],
    window: list[tuple[str, str]],
) -> dict[str, Any]:
    """Fine-tune the base as a full cycle would (its settings, its training rows), re-embed the corpus with it,
    and judge it against the base on the check queries and every next-traffic search by their true labels."""
    from flywheel.cycle.full import train_config
    from flywheel.cycle.split import labelled
    from flywheel.formats.pairs import examples_from_labelled
    from flywheel.learn.finetune import train_model
    from flywheel.models.loading import load_model

    t0 = time.monotonic()
    pairs = labelled(train_rows)
    out = tmp / "full-fine-tune"
    result = train_model(
        packaged_model_path(), examples_from_labelled(pairs), out, train_config(settings), False, pairs=pairs
    )
    train_s = time.monotonic() - t0
    tuned = load_model(str(out), "cpu")
    texts = {d.id: d.text for d in world.corpus}
    corpus = {doc_id: texts[doc_id] for doc_id in cache.doc_ids}
    docs = tuned.encode(list(corpus.values()), batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    check = retrieval_scores(tuned, world.check_queries, corpus, world.check_relevant, 10, docs)
    next_truth = retrieval_scores(tuned, dict(window), corpus, next_relevant(world, window), 10, docs)
    return {
        "world": world.name,
        "learner": "full fine-tune",
        "train_s": round(train_s, 2),
        "reembed_s": round(time.monotonic() - t0 - train_s, 2),
        "steps": result.steps,
        "check": _summary(compare_scores(base_scores[0], check, seed=settings.seed)),
        "next_truth": _summary(compare_scores(base_scores[1], next_truth, seed=settings.seed)),
        "next": None,
        "unseen": None,
        "next_judged": None,
        "unseen_judged": None,
    }


def _summary(block: dict[str, Any] | None) -> dict[str, Any] | None:
    if block is None:
        return None
    delta = block["delta"]["ndcg@10"]
    return {
        "n": block["n_queries"],
        "base": round(block["incumbent"]["ndcg@10"], 4),
        "learner": round(block["candidate"]["ndcg@10"], 4),
        "delta": round(delta["mean"], 4),
        "ci95": [round(x, 4) for x in delta["ci95"]],
        "relative": round(delta["mean"] / block["incumbent"]["ndcg@10"], 4) if block["incumbent"]["ndcg@10"] else None,
    }


def _cell(s: dict[str, Any] | None) -> str:
    if s is None:
        return "n/a"
    return f"{s['learner']:.3f} ({s['relative'] * 100:+.1f}%) [{s['ci95'][0]:+.3f},{s['ci95'][1]:+.3f}]"


def _line(r: dict[str, Any]) -> str:
    return (
        f"{r['world']:8} {r['traffic']:8} explore {r.get('explore', 0):.2f} shown {r['simulation']['shown_ndcg']:.3f} "
        f"{r['learner']:17} check {_cell(r['check']):34} "
        f"next (truth) {_cell(r.get('next_truth')):34} next {_cell(r['next']):34} "
        f"unseen {_cell(r['unseen']):34} judged: next {_cell(r['next_judged']):34} "
        f"unseen {_cell(r['unseen_judged']):34} train {r['train_s']:.1f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worlds", default="scifact,quora")
    parser.add_argument("--traffic", default="uniform,zipf")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--learners", default=",".join(LEARNERS))
    parser.add_argument("--explore", default="0", help="exploration shares to simulate, comma-separated")
    parser.add_argument("--explore-slots", type=int, default=Exploration.slots, help="last positions drawn")
    parser.add_argument("--explore-depth", type=int, default=Exploration.depth, help="the draw's reach below k")
    parser.add_argument(
        "--explore-repeats", type=int, default=Exploration.repeats, help="explore only questions asked this often"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "learners.json")
    args = parser.parse_args()
    learners = [x for x in args.learners.split(",") if x]
    unknown = set(learners) - set(LEARNERS)
    if unknown:
        sys.exit(f"unknown learners {sorted(unknown)}; choose from {', '.join(LEARNERS)}")
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    for world, vec in worlds_with_vectors(args.worlds):
        for traffic in args.traffic.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                for share in (float(x) for x in args.explore.split(",")):
                    exploration = Exploration(share, args.explore_slots, args.explore_depth, args.explore_repeats)
                    rows += run_cell(world, vec, traffic, seed, learners, exploration)
    write_results(args.out, {"rows": rows, "wall_s": round(time.monotonic() - started, 1)})
    print("\nnDCG@10 of base + learner, (relative change) [95% CI of the change]")
    for r in rows:
        print(_line(r))


if __name__ == "__main__":
    main()
