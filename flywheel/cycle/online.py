"""The online test: a candidate that passed the offline gate ranks beside the incumbent on live searches until
users' clicks decide (interleaving) or its shadow window ends, then the cycle promotes or rejects it.

Interleaving: a share of searches shows a team-draft merge of both rankers (`flywheel.serve.experiment`); each
list with feedback is a win, loss or tie for the challenger (`flywheel.scoring.interleaving.credit`); the
always-valid win-share test (`flywheel.scoring.sequential.win_share_test`) is applied every
`interleave_check_seconds` and stops the test as soon as it is sure, with false promotions bounded by
`interleave_alpha` however often it looks. Undecided at `interleave_max_searches` / `_max_hours`: the incumbent
stays (the offline gate alone was not enough to prove the candidate to users).

Shadow: the challenger ranks every search silently; when the window ends the candidate is promoted (it passed
the offline gate) and the report says how much it would have changed what users saw.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from flywheel.config import Settings
from flywheel.cycle.report.model import CycleReport
from flywheel.errors import Cancelled
from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import QueryAdapter
from flywheel.scoring.interleaving import Tally, credit
from flywheel.scoring.sequential import win_share_test
from flywheel.serve.experiment import Experiment
from flywheel.serve.ledger import experiment_feedback, experiment_searches, shadow_rows
from flywheel.serve.service import Service
from flywheel.serve.store import Store

log = logging.getLogger(__name__)

MAX_POINTS = 200  # points of the report's time series (older ones thinned out)
TOP = 3  # shadow mode reports how often the top TOP would change


def tally(store: Store, experiment_id: str) -> Tally:
    """The outcomes of an interleaving test so far (lists without feedback that carries credit count only as
    searches)."""
    searches = experiment_searches(store, experiment_id, "interleaved")
    teams: dict[str, dict[str, str]] = defaultdict(dict)
    events: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for search_id, doc_id, team, kind in experiment_feedback(store, experiment_id):
        teams[search_id][doc_id] = team
        events[search_id].append((doc_id, kind))
    counts = {"win": 0, "loss": 0, "tie": 0}
    for search_id, _ in searches:
        outcome = credit(teams[search_id], events[search_id]) if search_id in events else None
        if outcome is not None:
            counts[outcome] += 1
    return Tally(len(searches), counts["win"], counts["loss"], counts["tie"])


def interleave_summary(store: Store, experiment: Experiment, alpha: float) -> dict[str, Any]:
    """What an interleaving test shows now: counts, the win share and its always-valid band, the verdict."""
    counts = tally(store, experiment.id)
    verdict = win_share_test(counts.wins, counts.losses, alpha)
    return {
        "cycle_id": experiment.id,
        "mode": "interleave",
        "challenger": experiment.version,
        "started_at": experiment.started_at.isoformat(),
        "searches": counts.searches,
        "control_searches": len(experiment_searches(store, experiment.id, "incumbent")),
        "wins": counts.wins,
        "losses": counts.losses,
        "ties": counts.ties,
        "win_share": verdict.estimate,
        "band": [verdict.low, verdict.high],
        "log_evidence": round(verdict.log_evidence, 4),
        "alpha": alpha,
        "verdict": verdict.decision,
    }


def shadow_summary(store: Store, experiment: Experiment) -> dict[str, Any]:
    """What a shadow test shows now: searches, mean overlap@k, and how often the top 1 / top 3 would change."""
    rows = shadow_rows(store, experiment.id)
    n = len(rows)
    top1 = sum(1 for _, _, _, shown, other in rows if shown[:1] != other[:1])
    top3 = sum(1 for _, _, _, shown, other in rows if shown[:TOP] != other[:TOP])
    return {
        "cycle_id": experiment.id,
        "mode": "shadow",
        "challenger": experiment.version,
        "started_at": experiment.started_at.isoformat(),
        "searches": n,
        "mean_overlap_at_k": round(sum(ov / max(k, 1) for _, k, ov, _, _ in rows) / n, 4) if n else None,
        "top1_changed": round(top1 / n, 4) if n else None,
        f"top{TOP}_changed": round(top3 / n, 4) if n else None,
    }


def summary(store: Store, experiment: Experiment, settings: Settings) -> dict[str, Any]:
    """The live state of the running online test (GET /cycles/{id}, /metrics, the report)."""
    if experiment.mode == "shadow":
        return shadow_summary(store, experiment)
    return interleave_summary(store, experiment, settings.interleave_alpha)


def run_online_test(
    service: Service,
    report: CycleReport,
    version: str,
    encoder: Encoder,
    adapter: QueryAdapter | None,
    before_start: Callable[[], None] | None = None,
) -> bool:
    """Serve the candidate beside the incumbent until the test decides; record the online phase in the report.

    Args:
        service: the open Service.
        report: the cycle's report; gets `online`, a check and a reason.
        version: the candidate's version.
        encoder: the candidate's query encoder (the incumbent's base encoder for an adapter candidate), with its
            collection complete.
        adapter: the candidate's query adapter, if it is one.
        before_start: run under the serving lock just before the test starts (a full candidate's last
            catch-up: from then on every document write reaches its collection too).

    Returns:
        True to promote the candidate, False to keep the incumbent.

    Raises:
        Cancelled: the server is shutting down (the test ends undecided; the candidate is discarded).
    """
    settings = service.settings
    experiment = Experiment(
        id=report.cycle_id,
        mode="shadow" if settings.online_test == "shadow" else "interleave",
        version=version,
        encoder=encoder,
        adapter=adapter,
        fraction=settings.interleave_fraction,
    )
    service.start_experiment(experiment, before_start)
    started = time.monotonic()
    series: list[dict[str, Any]] = []
    try:
        while True:
            request = experiment.wait(settings.interleave_check_seconds)
            state = summary(service.store, experiment, settings)
            series.append(_point(state, time.monotonic() - started))
            if len(series) > MAX_POINTS:
                series = series[::2]
            promote, reason = _decide(state, request, time.monotonic() - started, settings)
            if promote is not None:
                break
    finally:
        service.end_experiment(experiment)  # before any swap or discard: no search reads a dropped collection
    state["duration_s"] = round(time.monotonic() - started, 3)
    state["decision"] = "promote" if promote else "keep the incumbent"
    state["reason"] = reason
    state["series"] = series
    report.online = state
    report.checks.append({"name": "online_test", "passed": promote, "detail": reason})
    if not promote:
        report.reasons.append(reason)
    log.info("online test of %s: %s (%s)", version, state["decision"], reason)
    return promote


def _decide(
    state: dict[str, Any], request: str | None, elapsed_s: float, settings: Settings
) -> tuple[bool | None, str]:
    """(promote or not, why), or (None, "") to go on."""
    if request == "shutdown":
        raise Cancelled("the server is shutting down during the online test: the incumbent stays")
    if request in ("promote", "reject"):
        return request == "promote", f"an operator ended the online test: {request}"
    searches, hours = state["searches"], elapsed_s / 3600
    if state["mode"] == "interleave":
        low, high = state["band"]
        tally_text = f"{state['wins']} wins, {state['losses']} losses, {state['ties']} ties in {searches} searches"
        share = "no decisive list yet" if state["win_share"] is None else f"win share {state['win_share']:.3f}"
        band = f"{share}, {1 - settings.interleave_alpha:.0%} band [{low:.3f}, {high:.3f}]"
        if state["verdict"] == "challenger":
            return True, f"users preferred the candidate: {tally_text}; {band}"
        if state["verdict"] == "incumbent":
            return False, f"users preferred the incumbent: {tally_text}; {band}"
        if searches >= settings.interleave_max_searches or hours >= settings.interleave_max_hours:
            limit = "searches" if searches >= settings.interleave_max_searches else "hours"
            return False, f"undecided at the {limit} limit ({tally_text}; {band}): the incumbent stays"
        return None, ""
    if searches >= settings.interleave_max_searches or hours >= settings.interleave_max_hours:
        top = state.get(f"top{TOP}_changed")
        share = "no searches" if top is None else f"it would have changed the top {TOP} of {top:.0%} of searches"
        return True, f"shadow window over after {searches} searches ({share}): promoted on the offline gate"
    return None, ""


def _point(state: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    """One point of the report's time series."""
    keys = ("searches", "wins", "losses", "ties", "win_share", "band", f"top{TOP}_changed", "mean_overlap_at_k")
    return {"t_s": round(elapsed_s, 1), **{k: state[k] for k in keys if k in state}}


__all__ = ["run_online_test", "summary", "tally"]
