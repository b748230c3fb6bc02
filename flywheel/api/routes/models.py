"""Model-version routes: list the versions and history, and roll the serving model back (admin key)."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from fastapi import APIRouter

from flywheel.api.deps import AdminKey, RoleDep, RunnerDep, SearchKey, ServiceDep
from flywheel.api.schemas import RollbackIn, RollbackOut
from flywheel.serve.versions import rollback

router = APIRouter()


@router.get("/models", dependencies=[SearchKey], tags=["models"])
def get_models(svc: ServiceDep, role: RoleDep) -> dict[str, Any]:
    """The incumbent, every version with its meta.json, and the promotion history (server file paths only
    for an admin key: a search key sees the last part of each, e.g. the model folder's name)."""
    models = {
        "incumbent": svc.registry.incumbent().to_dict(),
        "serving": svc.serving_version,
        "versions": [v.to_dict() for v in svc.registry.versions()],
        "history": svc.registry.history(),
    }
    return models if role == "admin" else hide_paths(models)


def hide_paths(value: Any) -> Any:
    """A copy of a JSON value with every absolute file path cut to its last part (`/srv/models/v2` -> `v2`)."""
    if isinstance(value, dict):
        return {k: hide_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [hide_paths(v) for v in value]
    if isinstance(value, str) and (
        value.startswith("~") or PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute()
    ):
        return PureWindowsPath(value).name or "…"  # Windows rules split on both kinds of separator
    return value


@router.post("/models/rollback", response_model=RollbackOut, dependencies=[AdminKey], tags=["models"])
def post_rollback(body: RollbackIn, svc: ServiceDep, runner: RunnerDep) -> RollbackOut:
    """Serve a kept earlier version again (alias and encoder switch together)."""
    with runner.maintenance("roll back"):  # 409 while a cycle runs or another rollback does
        previous = svc.serving_version
        entry = rollback(svc, body.to)
    return RollbackOut(model_version=entry.version, previous=previous)
