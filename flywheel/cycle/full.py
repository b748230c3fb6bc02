"""One retraining cycle: mine → split → train → evaluate → gate → re-embed → swap → report.

Each stage lives in its own module; this one only strings them together and keeps the books (timings,
counts, cleanup of a rejected or failed candidate). Rollback and pruning live in flywheel.serve.versions.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from flywheel.config import Settings
from flywheel.cycle.evaluation import (
    adapted_pair_error,
    filter_restrictions,
    heldout_queries,
    next_traffic_view,
    unseen_view,
)
from flywheel.cycle.gate import error_checks, gate_checks, golden_check, pair_error_guard
from flywheel.cycle.mining import MinedPairs, Pair, add_mined_negatives, corpus_texts, write_snapshot
from flywheel.cycle.online import run_online_test
from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.split import labelled
from flywheel.cycle.steps import (
    K,
    export_and_guard,
    finish_report,
    gate,
    mine_and_split,
    new_report,
    settle_decision,
    settle_failure,
    split_counts,
    stage_timer,
    torch_reference,
)
from flywheel.errors import IndexMismatch, InvalidInput
from flywheel.formats.pairs import examples_from_labelled, load_labelled_pairs
from flywheel.learn.finetune import TrainConfig
from flywheel.learn.subprocess import train_in_subprocess
from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import AdaptedQueries, QueryAdapter
from flywheel.models.registry import ModelVersion
from flywheel.scoring.pair_error import compare_pair_error
from flywheel.scoring.ranking import retrieval_scores
from flywheel.serve.service import Service
from flywheel.util.files import now_iso

log = logging.getLogger(__name__)


def train_config(settings: Settings) -> TrainConfig:
    """The TrainConfig a cycle uses, from settings (unset values keep the trainer's measured defaults)."""
    config = TrainConfig(
        epochs=settings.train_epochs,
        batch_size=settings.train_batch_size,
        cuda_batch_size=settings.train_batch_size_cuda,
        learning_rate=settings.train_learning_rate,
        max_steps=settings.train_max_steps,
        max_minutes=settings.train_max_minutes,
        dim=settings.train_dim,
        frozen_dense=settings.train_frozen_dense,
        seed=settings.seed,
        device=settings.device,
        threads=settings.train_threads or os.cpu_count(),  # the serving encoder's setting is fewer
    )
    if settings.train_loss:
        config.loss = settings.train_loss
    return config


def run_cycle(service: Service, cycle_id: str, on_stage: Callable[[str], None] = lambda _: None) -> CycleReport:
    """Run one cycle on an open Service and write its report; never raises for a failed cycle.

    Args:
        service: the open Service (owner of the data dir).
        cycle_id: the id the report is filed under.
        on_stage: called with each stage's name (progress for CLI and API).

    Returns:
        The report (also written to `<data_dir>/reports/<cycle_id>/`), with `decision` one of
        "promoted", "rejected", "failed".
    """
    settings = service.settings
    started = time.monotonic()
    timings: dict[str, float] = {}
    incumbent = service.encoder
    report = new_report(service, cycle_id, "full")
    timed = stage_timer(timings, on_stage)

    try:
        done = timed("mine")
        mined, train_rows, heldout_rows = mine_and_split(service, incumbent, report)
        if settings.mine_negatives and train_rows:
            mined.pairs = train_rows
            st_model = torch_reference(service, incumbent).model  # mining needs a SentenceTransformer
            add_mined_negatives(
                mined, st_model, corpus_texts(service.store), settings.mine_negatives, settings.mine_margin
            )
            train_rows = mined.pairs
            mined.pairs = train_rows + heldout_rows
        write_snapshot(mined, settings.cycles_dir / cycle_id / "pairs.parquet")
        heldout = labelled(heldout_rows)
        examples = examples_from_labelled(labelled(train_rows))
        report.counts = split_counts(mined.counts, train_rows, heldout_rows, len(examples))
        done()

        done = timed("train")
        version, folder = service.registry.allocate()
        report.candidate = version
        # A hung trainer must not hold the cycle lock until a restart: what is left of the budget, then killed.
        left_s = max(1.0, settings.max_cycle_minutes * 60 - (time.monotonic() - started))
        result = train_in_subprocess(
            incumbent_path(service),
            examples,
            folder,
            train_config(settings),
            pairs=labelled(train_rows),
            timeout_s=left_s,
        )
        candidate = service.registry.save(
            ModelVersion(
                version=version,
                kind="finetune",
                base_model=service.registry.get(incumbent.version).base_model,
                created_at=now_iso(),
                dimension=result.dimension,
                parent=incumbent.version,
                made_by={
                    "how": "fine-tuned on mined feedback pairs",
                    "cycle_id": cycle_id,
                    "window": report.window.model_dump() if report.window else None,
                    "pairs": report.counts["train_pairs"],
                    "examples": len(examples),
                    "hyperparameters": result.hyperparameters,
                    "device": result.device,
                    "duration_s": result.duration_s,
                },
            )
        )
        report.training = result.to_dict()
        done()

        done = timed("evaluate")
        # The gate compares the models in fp32; the int8 accuracy guard (export_and_guard) bounds the rest.
        challenger = service.load_encoder(candidate, backend="torch")
        reference = torch_reference(service, incumbent)
        pair_error = _pair_error(reference, challenger, heldout, settings.seed, service.adapter)
        report.metrics.pair_error = pair_error
        if settings.golden_pairs:
            golden = load_labelled_pairs(settings.golden_pairs)
            # Against what serves: with a query adapter on the incumbent, its queries are scored adapted.
            report.metrics.golden = (
                adapted_pair_error(reference, service.adapter, challenger.model, golden, settings.seed)
                if service.adapter is not None
                else compare_pair_error(reference.model, challenger.model, golden, seed=settings.seed)
            )
        if settings.gate_metric == "pair_error":
            checks = error_checks(pair_error, len(heldout), settings)
        else:  # the retrieval gate judges after the re-embed; a pair error far worse stops the cycle first
            checks = [pair_error_guard(pair_error, settings)]
        checks.append(golden_check(report.metrics.golden, settings))
        done()

        if all(c is None or c.passed for c in checks):
            done = timed("export")
            challenger, bulk, backend_check = export_and_guard(service, candidate, heldout, report, challenger)
            done()
            done = timed("reembed")
            since = service.mark()
            service.rebuild(version, bulk, challenger.dimension, progress=False)
            since = service.catch_up(challenger, since)
            done()
            done = timed("evaluate_retrieval")
            incumbent_side = AdaptedQueries(incumbent.version, incumbent.encode, service.adapter)
            views, examples_changed = _retrieval(service, incumbent_side, challenger, mined, train_rows, heldout_rows)
            report.metrics.retrieval, report.metrics.next_traffic = views["unseen"], views["next_traffic"]
            report.examples = examples_changed
            checks = [
                *gate_checks(pair_error, len(heldout), views, settings),
                golden_check(report.metrics.golden, settings),
                backend_check,
            ]
            done()
        decision = gate(report, checks, started, settings)

        def final_catch_up() -> None:
            service.catch_up(challenger, since)
            expected = service.store.count_documents()
            if service.index.count(version) != expected:
                raise IndexMismatch(
                    f"{service.index.collection(version)} has {service.index.count(version)} "
                    f"points for {expected} documents; not switching"
                )

        def online() -> bool:
            nonlocal since

            def catch_up() -> None:
                nonlocal since
                since = service.catch_up(challenger, since)

            return run_online_test(service, report, version, challenger, None, before_start=catch_up)

        settle_decision(
            service,
            report,
            version,
            decision.promote,
            timed,
            lambda: service.swap(challenger, before_switch=final_catch_up),
            online if settings.online_test != "off" else None,
        )
    except Exception as exc:
        log.exception("cycle %s failed", cycle_id)
        settle_failure(service, report, exc)
    return finish_report(service, report, timings, started)


def incumbent_path(service: Service) -> str:
    """What to fine-tune from: the incumbent's weights (the loop keeps learning from where it is)."""
    return service.registry.get(service.encoder.version).load_path


def _pair_error(
    incumbent: Encoder, challenger: Encoder, heldout: list, seed: int, adapter: QueryAdapter | None = None
) -> dict[str, Any] | None:
    """Compare pair error on held-out pairs, or None when they cannot support a threshold fit.

    With a query adapter serving on `incumbent`, the incumbent's side is scored as it serves (adapted query
    against base document).
    """
    labels = {p.label for p in heldout}
    if len(heldout) < 4 or labels != {0, 1}:
        return None
    if adapter is not None:
        return adapted_pair_error(incumbent, adapter, challenger.model, heldout, seed)
    try:
        return compare_pair_error(incumbent.model, challenger.model, heldout, seed=seed)
    except InvalidInput as exc:  # e.g. one class only on the calibration side
        log.warning("pair error not measurable: %s", exc)
        return None


def _collection_vectors(service: Service, version: str) -> dict[str, np.ndarray]:
    """A collection's vectors by document id (read back from Qdrant: nothing is encoded twice)."""
    ids, vectors = service.index.all_vectors(version, service.registry.get(version).dimension)
    return dict(zip(ids, vectors, strict=True))


def _retrieval(
    service: Service,
    incumbent: Encoder,
    challenger: Encoder,
    mined: MinedPairs,
    train_rows: list[Pair],
    heldout_rows: list[Pair],
) -> tuple[dict[str, dict[str, Any] | None], list[dict[str, Any]]]:
    """Both retrieval views of both versions over the real corpus, and the reviewer's changed examples.

    Both models are ranked over one id set, the documents present in both collections when they are read,
    so documents written or deleted meanwhile cannot break (or tilt) the comparison.
    """
    sides = {"incumbent": incumbent, "candidate": challenger}
    found = {name: _collection_vectors(service, enc.version) for name, enc in sides.items()}
    ids = sorted(found["incumbent"].keys() & found["candidate"].keys())
    if not ids:
        return {"unseen": None, "next_traffic": None}, []
    corpus = dict.fromkeys(ids, "")  # only the ids are used: vectors come from the collections
    matrices = {name: np.stack([vectors[i] for i in ids]) for name, vectors in found.items()}

    def score(
        side: str, queries: dict[str, str], relevant: dict[str, set[str]], judged: dict | None = None
    ) -> dict[str, np.ndarray]:
        return retrieval_scores(sides[side].model, queries, corpus, relevant, K, matrices[side], judged)

    seed = service.settings.seed
    # Filters are judged on the incumbent's collection: both collections hold the same documents and metadata.
    groups, searches = filter_restrictions(mined, lambda f: service.index.matching_ids(incumbent.version, f))
    views = {
        "unseen": unseen_view(score, heldout_rows, train_rows, seed, mined.shown, groups),
        "next_traffic": next_traffic_view(score, mined.next_traffic, train_rows, seed, searches),
    }
    queries, relevant = heldout_queries(heldout_rows)
    return views, _changed_examples(service, incumbent, challenger, queries, relevant)


def _changed_examples(
    service: Service, incumbent: Encoder, challenger: Encoder, queries: dict[str, str], relevant: dict[str, set[str]]
) -> list[dict[str, Any]]:
    """Up to 8 held-out queries whose top-3 changed, before and after, for the reviewer."""
    examples = []
    candidates = list(queries.items())[:200]
    texts = [query for _, query in candidates]
    # One batch per encoder instead of two single encodes per query.
    before_vecs, after_vecs = incumbent.encode(texts), challenger.encode(texts)
    for i, (group, query) in enumerate(candidates):
        before = service.index.search(before_vecs[i], 3, collection=service.index.collection(incumbent.version))
        after = service.index.search(after_vecs[i], 3, collection=service.index.collection(challenger.version))
        if [h.doc_id for h in before] != [h.doc_id for h in after]:
            examples.append(
                {
                    "query": query,
                    "relevant": sorted(relevant[group]),
                    "before": [{"doc_id": h.doc_id, "text": h.text} for h in before],
                    "after": [{"doc_id": h.doc_id, "text": h.text} for h in after],
                }
            )
        if len(examples) == 8:
            break
    return examples


__all__ = ["run_cycle", "train_config"]
