"""FastAPI dependencies: the Service, runner, settings and metrics on `app.state`, and the API-key checks.

All are `async def` though none awaits: they do no blocking work, and FastAPI runs a plain `def` dependency in
its thread pool, a hop per dependency per request that cost more than the rest of the search route's overhead.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flywheel.api.prometheus import Metrics
from flywheel.config import Settings
from flywheel.cycle.runner import CycleRunner
from flywheel.errors import FlywheelError
from flywheel.serve.service import Service


async def get_service(request: Request) -> Service:
    """The Service opened in the lifespan."""
    return request.app.state.service


async def get_runner(request: Request) -> CycleRunner:
    """The cycle runner started in the lifespan."""
    return request.app.state.runner


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    """The app's Prometheus metrics."""
    return request.app.state.metrics


ServiceDep = Annotated[Service, Depends(get_service)]
RunnerDep = Annotated[CycleRunner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False)


class Unauthorized(FlywheelError):
    """No API key, or one that is not configured (401)."""


class Forbidden(FlywheelError):
    """A search key on an admin route (403)."""


def role_of(settings: Settings, key: str) -> str | None:
    """Which role a key has; constant-time comparisons so keys cannot be guessed by timing."""
    role = None
    for candidate in settings.admin_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            role = "admin"
    for candidate in settings.search_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            role = role or "search"
    return role


async def caller_role(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The caller's role, "admin" or "search" ("admin" when no keys are configured: everything is open).

    Raises:
        Unauthorized: keys are configured and the request has none, or one that is not configured.
    """
    settings: Settings = request.app.state.settings
    if not settings.auth_enabled:
        return "admin"
    if creds is None:
        raise Unauthorized("missing API key: send `Authorization: Bearer <key>`")
    have = role_of(settings, creds.credentials)
    if have is None:
        raise Unauthorized("invalid API key")
    return have


def require(role: str) -> Callable[..., Awaitable[None]]:
    """A dependency that lets a request through only with a key of `role` (or any key when auth is off)."""

    async def check(have: Annotated[str, Depends(caller_role)]) -> None:
        if role == "admin" and have != "admin":
            raise Forbidden("this route needs an admin key; a search key was given")

    return check


SearchKey = Depends(require("search"))
AdminKey = Depends(require("admin"))
RoleDep = Annotated[str, Depends(caller_role)]

__all__ = [
    "AdminKey",
    "Forbidden",
    "MetricsDep",
    "RoleDep",
    "RunnerDep",
    "SearchKey",
    "ServiceDep",
    "SettingsDep",
    "Unauthorized",
    "caller_role",
    "get_metrics",
    "get_runner",
    "get_service",
    "get_settings",
    "require",
    "role_of",
]
