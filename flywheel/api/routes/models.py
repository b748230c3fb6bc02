"""Model-version routes: list the versions and history, and roll the serving model back (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from flywheel.api.deps import AdminKey, RunnerDep, SearchKey, ServiceDep
from flywheel.api.schemas import RollbackIn, RollbackOut
from flywheel.errors import Conflict
from flywheel.serve.versions import rollback

router = APIRouter()


@router.get("/models", dependencies=[SearchKey], tags=["models"])
def get_models(svc: ServiceDep) -> dict[str, Any]:
    """The incumbent, every version with its meta.json, and the promotion history."""
    return {
        "incumbent": svc.registry.incumbent().to_dict(),
        "serving": svc.serving_version,
        "versions": [v.to_dict() for v in svc.registry.versions()],
        "history": svc.registry.history(),
    }


@router.post("/models/rollback", response_model=RollbackOut, dependencies=[AdminKey], tags=["models"])
def post_rollback(body: RollbackIn, svc: ServiceDep, runner: RunnerDep) -> RollbackOut:
    """Serve a kept earlier version again (alias and encoder switch together)."""
    if runner.running():
        raise Conflict("a cycle is running; roll back after it finished")
    previous = svc.serving_version
    entry = rollback(svc, body.to)
    return RollbackOut(model_version=entry.version, previous=previous)
