"""Retraining-cycle routes: start one now, list recent ones, read one's state, end an online test (admin key)."""

from __future__ import annotations

from fastapi import APIRouter

from flywheel.api.deps import AdminKey, RunnerDep
from flywheel.api.schemas import CycleIn, CycleOut, CycleStarted, StopIn

router = APIRouter()


@router.post("/cycles", status_code=202, response_model=CycleStarted, dependencies=[AdminKey], tags=["cycles"])
def post_cycle(runner: RunnerDep, body: CycleIn | None = None) -> CycleStarted:
    """Start a retraining cycle now (optional body {"mode": "adapter"|"full"|"auto"}); 409 if one is running."""
    return CycleStarted(cycle_id=runner.start("api", mode=body.mode if body else None))


@router.get("/cycles", response_model=list[CycleOut], dependencies=[AdminKey], tags=["cycles"])
def get_cycles(runner: RunnerDep) -> list[CycleOut]:
    """Recent cycles, newest first."""
    return [CycleOut(**c) for c in runner.list()]


@router.get("/cycles/{cycle_id}", response_model=CycleOut, dependencies=[AdminKey], tags=["cycles"])
def get_cycle(cycle_id: str, runner: RunnerDep) -> CycleOut:
    """A cycle's state and stage; while its candidate is tested online ("testing"), the test's live counts."""
    return CycleOut(**runner.describe(cycle_id))


@router.post(
    "/cycles/{cycle_id}/stop", status_code=202, response_model=CycleOut, dependencies=[AdminKey], tags=["cycles"]
)
def stop_cycle_test(cycle_id: str, body: StopIn, runner: RunnerDep) -> CycleOut:
    """End a cycle's online test now: promote its candidate or keep the incumbent; 409 if it is not testing."""
    return CycleOut(**runner.stop_test(cycle_id, body.decision))
