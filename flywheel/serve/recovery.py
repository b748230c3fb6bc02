"""After a crash: settle the records of cycles that did finish, from the model registry (which is written
before the cycle record), so that start-up recovery fails only the cycles that were really cut short."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from flywheel.models.registry import Registry
from flywheel.serve.ledger import CycleLedger
from flywheel.serve.store import Store

log = logging.getLogger(__name__)


def settle_promoted_cycles(store: Store, registry: Registry) -> list[str]:
    """Mark interrupted cycles whose candidate the registry promoted as promoted, and return their ids.

    A cycle promotes its candidate in the registry (what a restart serves) before it records its own state;
    a crash in between left it `running`. The candidate's meta.json names the cycle that made it.
    """
    ledger = CycleLedger(store, owner="recovery")
    interrupted = set(ledger.ids_in_state("queued", "running"))
    if not interrupted:
        return []
    promoted_at = {h["version"]: h["at"] for h in registry.history() if h["action"] == "promoted"}
    settled = []
    for entry in registry.versions():
        cycle_id = entry.made_by.get("cycle_id")
        if cycle_id not in interrupted or entry.version not in promoted_at:
            continue
        end = (entry.made_by.get("window") or {}).get("end")
        ledger.update(
            cycle_id,
            state="promoted",
            stage="done",
            candidate=entry.version,
            finished_at=_naive(promoted_at[entry.version]),
            window_end=_naive(end) if end else None,
            error=None,
        )
        log.warning("cycle %s was interrupted after promoting %s: recorded as promoted", cycle_id, entry.version)
        settled.append(cycle_id)
    return settled


def _naive(iso: str) -> datetime:
    """A stored ISO time as the naive UTC the cycle table holds."""
    parsed = datetime.fromisoformat(iso)
    return parsed.astimezone(UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


__all__ = ["settle_promoted_cycles"]
