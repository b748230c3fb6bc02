"""Steps both kinds of cycle share: the report skeleton, stage timing, mining and splitting, the gate, settling."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable
from typing import Any

from flywheel.config import Settings
from flywheel.cycle.gate import Decision, budget_check, decide
from flywheel.cycle.mining import MinedPairs, Pair, mine_pairs
from flywheel.cycle.report.files import write_report
from flywheel.cycle.report.model import CycleReport, Window
from flywheel.cycle.split import split_by_group
from flywheel.errors import Conflict, InvalidInput
from flywheel.models.encoder import Encoder
from flywheel.models.export import export_folder, read_export, record_failed_export
from flywheel.models.guard import run_guard
from flywheel.models.registry import ModelVersion, mark_discarded
from flywheel.serve.service import Service
from flywheel.serve.versions import prune
from flywheel.types import Check, LabelledPair
from flywheel.util.files import now_iso

log = logging.getLogger(__name__)

K = 10  # the cut-off of every retrieval metric a cycle reports and gates on (nDCG/MRR/Recall@K)


def torch_reference(service: Service, incumbent: Encoder) -> Encoder:
    """The incumbent as a PyTorch model: the gate compares fp32 models, and negative mining needs a
    SentenceTransformer (reloaded only when the incumbent serves through ONNX)."""
    if incumbent.backend == "torch":
        return incumbent
    return service.load_encoder(service.registry.get(incumbent.version), backend="torch")


def export_and_guard(
    service: Service,
    entry: ModelVersion,
    heldout: list[LabelledPair],
    report: CycleReport,
    torch_encoder: Encoder | None = None,
) -> tuple[Encoder, Encoder, Check]:
    """The cycle's ONNX step before re-embedding: export, guard on held-out pairs, load the encoders to use.

    With every backend on torch and `export_on_promote` off, nothing is exported. An export that fails is
    fatal only when a configured backend needs it.

    Args:
        service: the open Service.
        entry: the candidate version.
        heldout: the cycle's labelled held-out pairs.
        report: the cycle report; gets an "onnx" section.
        torch_encoder: the candidate already loaded with torch (reused when torch encodes queries).

    Returns:
        (query encoder, bulk encoder, a gate Check that records which backends serve and why).
    """
    settings = service.settings
    backends = {settings.encoder_backend, settings.bulk_backend}
    needs_onnx = bool(backends & {"onnx", "onnx-int8"})  # "auto" falls back to torch where export fails
    section: dict[str, Any] = {"requested": {"query": settings.encoder_backend, "bulk": settings.bulk_backend}}
    report.onnx = section
    if needs_onnx or "auto" in backends or settings.export_on_promote:
        try:
            meta = run_guard(service.registry, entry, settings, heldout, "cycle held-out pairs")
            section.update(
                folder=str(export_folder(service.registry, entry)),
                parity=meta.get("parity"),
                guard=meta["guard"],
                quantization=meta.get("quantization"),
                opset=meta.get("opset"),
            )
        except Exception as exc:  # any failure to export means torch serves, unless ONNX was asked for
            if needs_onnx:
                raise
            log.warning("ONNX export of %s failed (torch serves, so the cycle goes on): %s", entry.version, exc)
            section["error"] = str(exc)
            if not isinstance(exc, OSError) and read_export(export_folder(service.registry, entry)) is None:
                record_failed_export(service.registry, entry, exc)  # the export itself: "auto" will not retry
    reuse = torch_encoder is not None and settings.encoder_backend == "torch"
    query = torch_encoder if reuse else service.load_encoder(entry)
    bulk = query if settings.bulk_backend == settings.encoder_backend else service.load_encoder(entry, bulk=True)
    section["serving"] = {"query": query.backend, "bulk": bulk.backend}
    guard = section.get("guard")
    if guard is None:
        detail = f"ONNX export failed: {section['error']}" if "error" in section else "no ONNX export"
    elif "onnx-int8" in backends and not guard["passed"]:
        detail = f"int8 refused by the accuracy guard ({guard['reason']}): encoding with onnx fp32 instead"
    else:
        verdict = "passed" if guard["passed"] else "refused"
        detail = f"int8 accuracy guard {verdict} on {guard['data']} ({guard['reason']})"
    detail += f"; query encoder {query.backend}, corpus encoder {bulk.backend}"
    return query, bulk, Check("encoder_backend", True, detail)


def gate(report: CycleReport, checks: list[Check | None], started: float, settings: Settings) -> Decision:
    """Add the time budget to `checks`, decide, and record the checks and reasons in the report."""
    checks.append(budget_check(time.monotonic() - started, settings))
    decision = decide(checks)
    report.checks = decision.to_dict()["checks"]
    report.reasons = decision.reasons
    return decision


def split_counts(
    mined: dict[str, int], train_rows: list[Pair], heldout_rows: list[Pair], n_examples: int
) -> dict[str, int]:
    """The report's counts after mining and splitting.

    Raises:
        InvalidInput: no training example (no training-side query has a click yet): nothing to train.
    """
    if not n_examples:
        raise InvalidInput("no training example: no training-side query has a clicked document yet")
    return {
        **mined,
        "train_pairs": len(train_rows),
        "heldout_pairs": len(heldout_rows),
        "heldout_queries": len({p.group for p in heldout_rows}),
        "train_examples": n_examples,
    }


def settle_decision(
    service: Service,
    report: CycleReport,
    version: str,
    promote: bool,
    timed: Callable[[str], Callable[[], None]],
    swap: Callable[[], None],
    online: Callable[[], bool] | None = None,
) -> None:
    """Promote the candidate (timed swap, registry, pruning) or discard it, and record the decision.

    With `online` (an online test, `flywheel.cycle.online`), a candidate that passed the offline gate is
    promoted only if the test says so.
    """
    if promote and online is not None:
        done = timed("online_test")
        promote = online()
        done()
    if not promote:
        report.decision = "rejected"
        _discard(service, version, status="rejected", metrics=_summary(report))
        return
    if service.serving_version != report.incumbent:  # a rollback cannot start during a cycle; say so if it did
        raise Conflict(f"{service.serving_version} serves, not the cycle's incumbent {report.incumbent}: not switching")
    done = timed("swap")
    swap()
    service.registry.mark(version, "candidate", _summary(report))
    service.registry.promote(version)
    report.serving_after = version
    report.decision = "promoted"
    done()
    prune(service)


def settle_failure(service: Service, report: CycleReport, exc: Exception) -> None:
    """Record a cycle's failure; keep a candidate that already serves, discard one that does not."""
    serving = service.serving_version
    report.error = str(exc) if isinstance(exc, InvalidInput) else f"{exc}\n{traceback.format_exc()}"
    if report.candidate and serving == report.candidate:
        # The switch already happened (the failure came after it): never discard what serves now.
        report.decision = "promoted"
        report.serving_after = serving
        if service.registry.incumbent().version != serving:
            service.registry.promote(serving)  # so a restart keeps serving it
    else:
        report.decision = "rejected" if isinstance(exc, InvalidInput) else "failed"
        report.reasons = report.reasons or [str(exc)]
        if report.candidate:
            _discard(service, report.candidate, status="failed", metrics={"error": str(exc)[:500]})


def finish_report(service: Service, report: CycleReport, timings: dict[str, float], started: float) -> CycleReport:
    """Add timings and duration, write the report (JSON + HTML), and return it."""
    report.timings = timings
    report.duration_s = round(time.monotonic() - started, 3)
    write_report(service.settings.reports_dir, report)
    return report


def new_report(service: Service, cycle_id: str, kind: str, base: str | None = None) -> CycleReport:
    """The report skeleton every kind of cycle fills in (one shape for the gate, the API and the HTML)."""
    return CycleReport(
        cycle_id=cycle_id,
        created_at=now_iso(),
        kind=kind,
        incumbent=service.serving_version,  # an adapter's version when one serves on top of the encoder
        base=base,
        serving_after=service.serving_version,
    )


def stage_timer(timings: dict[str, float], on_stage: Callable[[str], None]) -> Callable[[str], Callable[[], None]]:
    """`timed(name)` announces a stage and returns the callable that records its duration in `timings`."""

    def timed(name: str) -> Callable[[], None]:
        on_stage(name)
        t0 = time.monotonic()
        return lambda: timings.__setitem__(name, round(time.monotonic() - t0, 3))

    return timed


def mine_and_split(
    service: Service, encoder: Encoder, report: CycleReport
) -> tuple[MinedPairs, list[Pair], list[Pair]]:
    """Mine the feedback window into pairs and split them by query group; records the window in `report`.

    Returns:
        (the MinedPairs, the training-side rows, the held-out rows).
    """
    settings = service.settings
    mined = mine_pairs(
        service.store,
        window_days=settings.window_days,
        max_pairs_per_query=settings.max_pairs_per_query,
        group_threshold=settings.query_group_threshold,
        encoder=encoder if settings.query_group_threshold else None,
        next_traffic_percent=settings.next_traffic_percent,
    )
    report.window = Window(
        start=mined.window_start.isoformat() if mined.window_start else None,
        end=mined.window_end.isoformat(),
        next_traffic_start=mined.next_traffic_start.isoformat() if mined.next_traffic_start else None,
    )
    train_rows, heldout_rows = split_by_group(mined.pairs, lambda p: p.group, settings.heldout_percent)
    return mined, train_rows, heldout_rows


def _summary(report: CycleReport) -> dict[str, Any]:
    """The metrics kept in a candidate's meta.json."""
    pair = report.metrics.pair_error or {}
    retrieval = report.metrics.retrieval or {}
    return {
        "cycle_id": report.cycle_id,
        "error_rate": (pair.get("candidate") or {}).get("error_rate"),
        "incumbent_error_rate": (pair.get("incumbent") or {}).get("error_rate"),
        "ndcg@10": (retrieval.get("candidate") or {}).get(f"ndcg@{K}"),
    }


def _discard(service: Service, version: str, status: str, metrics: dict[str, Any] | None = None) -> None:
    """Drop a rejected or failed candidate's collection and weights; its meta.json stays for the history."""
    service.index.drop(version)
    mark_discarded(service.registry, version, status, metrics)
