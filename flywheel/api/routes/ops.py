"""Operational routes: health with the serving version, an unauthenticated liveness probe, store counts."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import SearchKey, ServiceDep
from flywheel.api.schemas import HealthOut, StatsOut

router = APIRouter()


@router.get("/healthz", response_model=HealthOut, dependencies=[SearchKey], tags=["ops"])
def healthz(svc: ServiceDep) -> HealthOut:
    """Health, the serving model version and the corpus size."""
    return HealthOut(**svc.health())


@router.get("/livez", tags=["ops"])
def livez() -> dict[str, str]:
    """Unauthenticated liveness probe for load balancers; says nothing about the data."""
    return {"status": "ok"}


@router.get("/stats", response_model=StatsOut, dependencies=[SearchKey], tags=["ops"])
def stats(svc: ServiceDep) -> StatsOut:
    """Row counts of the event store."""
    return StatsOut(**svc.store.stats())
