"""The promotion gate: optimise the error rate, satisfy nDCG, the golden set and the time budget.

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
