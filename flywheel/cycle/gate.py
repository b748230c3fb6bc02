"""The promotion gate: lead with one measure, guard the others, within the time budget.

Two ways to lead (`gate_metric`): "retrieval" (the default for click traffic) promotes on nDCG@10 of one
retrieval view (`gate_view`: the next traffic, or unseen queries), with a paired 95% CI above zero, while the
other view and the pair error may not get worse by more than a tolerance; "pair_error" (the seed's setting,
for labelled pairs) promotes on the drop of the pair error, with the nDCG of unseen queries as a guard.

By default (`gate_ranking` "judged") each held-out search ranks only the documents its feedback judged: the
clicks were collected under the incumbent's ranking, so a candidate that lifts a relevant document nobody was
shown would otherwise count as worse for displacing the one they clicked (measured on SciFact: whole-corpus
views -3.5% where the judged views and the true judgements both say +4 to +6%; bench/learners.py).

Every check is written down with its numbers, passed or not, so a reviewer sees why a candidate was promoted
or rejected.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from flywheel.config import Settings
from flywheel.types import Check


@dataclass(frozen=True)
class Decision:
    """The gate's verdict."""

    promote: bool
    checks: list[Check]

    @property
    def reasons(self) -> list[str]:
        """Why: the failed checks when rejected, every check when promoted."""
        failed = [c.detail for c in self.checks if not c.passed]
        return failed if failed else [c.detail for c in self.checks]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the report."""
        return {"promote": self.promote, "reasons": self.reasons, "checks": [asdict(c) for c in self.checks]}


def _pt(x: float) -> str:
    return f"{x * 100:+.1f} pt"


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def error_checks(pair_error: dict[str, Any] | None, heldout_pairs: int, settings: Settings) -> list[Check]:
    """Checks on the held-out pair error: enough data, a large enough drop, and a CI above zero.

    Args:
        pair_error: `flywheel.scoring.pair_error.compare_pair_error` output, or None when it could not be measured.
        heldout_pairs: labelled held-out pairs available.
        settings: thresholds (min_improvement, min_relative_improvement, require_significant, ...).
    """
    if pair_error is None or heldout_pairs < settings.min_heldout_pairs:
        return [
            Check(
                "enough_heldout_data",
                False,
                f"only {heldout_pairs} labelled held-out pairs with both labels; the gate needs "
                f"{settings.min_heldout_pairs} (min_heldout_pairs): collect more feedback",
            )
        ]
    inc = pair_error["incumbent"]["error_rate"]
    cand = pair_error["candidate"]["error_rate"]
    drop = inc - cand
    lo, hi = pair_error["delta_ci95"]
    checks = [
        Check(
            "error_rate_improvement",
            drop >= settings.min_improvement,
            f"error rate {_pct(cand)} vs incumbent {_pct(inc)}: {_pt(-drop)} "
            f"(needs a drop of at least {settings.min_improvement * 100:.1f} pt)",
        )
    ]
    if settings.min_relative_improvement > 0:
        relative = drop / inc if inc else 0.0
        checks.append(
            Check(
                "relative_improvement",
                relative >= settings.min_relative_improvement,
                f"{relative * 100:.1f}% of the incumbent's mistakes avoided "
                f"(needs {settings.min_relative_improvement * 100:.1f}%)",
            )
        )
    if settings.require_significant:
        checks.append(
            Check(
                "improvement_significant",
                hi < 0,
                f"95% CI of the error change {_pt(lo)}..{_pt(hi)} (must lie below zero)",
            )
        )
    return checks


def retrieval_check(retrieval: dict[str, Any] | None, settings: Settings) -> Check:
    """nDCG@10 on held-out queries must not fall by more than `max_ndcg_drop`."""
    if retrieval is None:
        return Check("ndcg_guard", True, "nDCG@10 not measured: no held-out query has a clicked document")
    inc = retrieval["incumbent"]["ndcg@10"]
    cand = retrieval["candidate"]["ndcg@10"]
    lo, hi = retrieval["delta"]["ndcg@10"]["ci95"]
    return Check(
        "ndcg_guard",
        cand - inc >= -settings.max_ndcg_drop,
        f"nDCG@10 {cand:.3f} vs incumbent {inc:.3f} ({cand - inc:+.3f}, 95% CI {lo:+.3f}..{hi:+.3f}; "
        f"may fall by at most {settings.max_ndcg_drop:.3f})",
    )


def lead_view(views: dict[str, dict[str, Any] | None], settings: Settings) -> str:
    """The retrieval view the gate leads with: `gate_view`, or with "auto" the next traffic when it has enough
    searches (what users will send next), else the unseen queries."""
    if settings.gate_view != "auto":
        return settings.gate_view
    traffic = views.get("next_traffic")
    return "next_traffic" if traffic and traffic["n_queries"] >= settings.min_heldout_queries else "unseen"


_VIEW_NAMES = {"next_traffic": "next traffic", "unseen": "unseen queries"}


def retrieval_checks(
    views: dict[str, dict[str, Any] | None], pair_error: dict[str, Any] | None, settings: Settings, k: int = 10
) -> list[Check]:
    """The retrieval-led gate: enough held-out searches, a real nDCG@k gain in the lead view, no loss elsewhere.

    Args:
        views: {"unseen": view block or None, "next_traffic": view block or None} (see cycle.evaluation).
        pair_error: the held-out pair error block, or None (then its guard is skipped).
        settings: min_heldout_queries, min_ndcg_gain, require_significant, max_ndcg_drop, max_error_rise.
        k: the metrics' cut-off.
    """
    metric = f"ndcg@{k}"
    if settings.gate_ranking == "judged":  # each held-out search ranks only the documents its feedback judged
        views = {name: (view.get("judged") or view) if view else None for name, view in views.items()}
    lead = lead_view(views, settings)
    block = views.get(lead)
    n = block["n_queries"] if block else 0
    if n < settings.min_heldout_queries:
        return [
            Check(
                "enough_heldout_data",
                False,
                f"only {n} held-out {_VIEW_NAMES[lead]} with a click; the gate needs {settings.min_heldout_queries} "
                "(min_heldout_queries): collect more feedback",
            )
        ]
    entry, mde = block[metric], (block.get("mde") or {}).get(metric)
    lo, hi = entry["ci95"]
    gain = entry["delta"]
    mde_text = f"; detectable at this size: {mde:+.3f}" if mde is not None else ""
    ranked = "judged results" if settings.gate_ranking == "judged" else "whole corpus"
    checks = [
        Check(
            "ndcg_improvement",
            gain >= settings.min_ndcg_gain and (lo > 0 or not settings.require_significant),
            f"{_VIEW_NAMES[lead]} ({n}, {ranked}): nDCG@{k} {entry['candidate']:.3f} vs incumbent "
            f"{entry['incumbent']:.3f} "
            f"({gain:+.3f}, 95% CI {lo:+.3f}..{hi:+.3f}; needs a gain of at least {settings.min_ndcg_gain:.3f}"
            f"{' with the CI above zero' if settings.require_significant else ''}{mde_text})",
        )
    ]
    for name, other in views.items():
        if name == lead or other is None:
            continue
        change = other[metric]["delta"]
        checks.append(
            Check(
                f"{name}_guard",
                change >= -settings.max_ndcg_drop,
                f"{_VIEW_NAMES[name]} ({other['n_queries']}): nDCG@{k} {change:+.3f} "
                f"(95% CI {other[metric]['ci95'][0]:+.3f}..{other[metric]['ci95'][1]:+.3f}; "
                f"may fall by at most {settings.max_ndcg_drop:.3f})",
            )
        )
    guard = pair_error_guard(pair_error, settings)
    return checks + ([guard] if guard is not None else [])


def pair_error_guard(pair_error: dict[str, Any] | None, settings: Settings) -> Check | None:
    """With the retrieval gate: the held-out pair error may not rise by more than `max_error_rise`."""
    if pair_error is None:
        return None
    inc, cand = pair_error["incumbent"]["error_rate"], pair_error["candidate"]["error_rate"]
    return Check(
        "pair_error_guard",
        cand - inc <= settings.max_error_rise,
        f"held-out pair error {_pct(cand)} vs incumbent {_pct(inc)} ({_pt(cand - inc)}; "
        f"may rise by at most {settings.max_error_rise * 100:.1f} pt)",
    )


def gate_checks(
    pair_error: dict[str, Any] | None,
    heldout_pairs: int,
    views: dict[str, dict[str, Any] | None],
    settings: Settings,
) -> list[Check]:
    """Every check of the measure the gate leads with (`gate_metric`) and of its guards."""
    if settings.gate_metric == "pair_error":
        return [*error_checks(pair_error, heldout_pairs, settings), retrieval_check(views.get("unseen"), settings)]
    return retrieval_checks(views, pair_error, settings)


def golden_check(golden: dict[str, Any] | None, settings: Settings) -> Check | None:
    """The user's golden pairs: the error may not rise by more than `min_improvement`."""
    if golden is None:
        return None
    inc = golden["incumbent"]["error_rate"]
    cand = golden["candidate"]["error_rate"]
    return Check(
        "golden_set_guard",
        cand - inc <= settings.min_improvement,
        f"golden-set error {_pct(cand)} vs incumbent {_pct(inc)} ({_pt(cand - inc)})",
    )


def budget_check(elapsed_s: float, settings: Settings) -> Check:
    """The cycle must finish within `max_cycle_minutes`."""
    limit = settings.max_cycle_minutes * 60
    return Check(
        "time_budget",
        elapsed_s <= limit,
        f"cycle took {elapsed_s / 60:.1f} min of a {settings.max_cycle_minutes:.0f} min budget",
    )


def decide(checks: list[Check | None]) -> Decision:
    """Promote only when every check passed."""
    present = [c for c in checks if c is not None]
    return Decision(bool(present) and all(c.passed for c in present), present)
