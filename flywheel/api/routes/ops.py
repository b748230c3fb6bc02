"""Operational routes: health with the serving version, an unauthenticated liveness probe, store counts, and a
retention run (admin key)."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import AdminKey, RunnerDep, SearchKey, ServiceDep
from flywheel.api.schemas import GcIn, GcOut, HealthOut, StatsOut

router = APIRouter()


@router.get("/healthz", response_model=HealthOut, dependencies=[SearchKey], tags=["ops"])
def healthz(svc: ServiceDep) -> HealthOut:
    """Health, the serving model version and the corpus size."""
    return HealthOut(**svc.health())


@router.get("/livez", tags=["ops"])
async def livez() -> dict[str, str]:
    """Unauthenticated liveness probe for load balancers; says nothing about the data.

    `async`: it blocks on nothing, and a plain `def` route costs a hop to a worker thread (~0.4 ms here).
    """
    return {"status": "ok"}


@router.get("/stats", response_model=StatsOut, dependencies=[SearchKey], tags=["ops"])
def stats(svc: ServiceDep) -> StatsOut:
    """Row counts of the event store."""
    return StatsOut(**svc.store.stats())


@router.post("/ops/gc", response_model=GcOut, dependencies=[AdminKey], tags=["ops"])
def post_gc(runner: RunnerDep, body: GcIn | None = None) -> GcOut:
    """Apply the retention settings now (optional body {"dry_run": true}: only count); 409 while a cycle runs."""
    return GcOut(**runner.gc(dry_run=body.dry_run if body else False))
