"""FastAPI dependencies: the Service, runner, settings and metrics on `app.state`, and the API-key checks.

All are `async def` though none awaits: they do no blocking work, and FastAPI runs a plain `def` dependency in
its thread pool, a hop per dependency per request that cost more than the rest of the search route's overhead.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hmac
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flywheel.api.prometheus import Metrics
from flywheel.config import Settings
from flywheel.cycle.runner import CycleRunner
from flywheel.errors import Conflict, FlywheelError, InvalidInput, NotFound, PayloadTooLarge, StoreLocked
from flywheel.serve.service import Service

T = TypeVar("T")


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


async def in_pool(pool: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn(*args)` on `pool` with the caller's context (log fields), off the event loop.

    One `run_in_executor` hop: anyio's thread pool (what a plain `def` route gets) adds a capacity limiter and
    a cancel scope per call; with the search route's one dependency this saved ~0.15 ms of its ~0.8 ms.
    """
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(pool, functools.partial(context.run, fn, *args))


ServiceDep = Annotated[Service, Depends(get_service)]
RunnerDep = Annotated[CycleRunner, Depends(get_runner)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

_bearer = HTTPBearer(auto_error=False)


class Unauthorized(FlywheelError):
    """No API key, or one that is not configured (401)."""


class Forbidden(FlywheelError):
    """A search key on an admin route (403)."""


# The HTTP status of each named error, first match wins (the app's exception handlers and the search fast path).
ERROR_STATUS: list[tuple[type[Exception], int]] = [
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StoreLocked, 503),
    (Unauthorized, 401),
    (Forbidden, 403),
]


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


@dataclass(frozen=True)
class SearchContext:
    """What the search route needs, as one dependency: FastAPI solves each dependency of a request in turn, at
    about 40 us apiece on a 2-core machine, and the search route is the one where that shows."""

    service: Service
    settings: Settings
    pool: ThreadPoolExecutor  # the threads that answer searches (`Settings.search_threads`), made in the lifespan
    metrics: Metrics


async def search_context(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> SearchContext:
    """The search route's service, settings and pool, once the caller's key passed (any role may search).

    Raises:
        Unauthorized: as `caller_role`.
    """
    await caller_role(request, creds)
    state = request.app.state
    return SearchContext(state.service, state.settings, state.search_pool, state.metrics)


SearchContextDep = Annotated[SearchContext, Depends(search_context)]


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
    "ERROR_STATUS",
    "AdminKey",
    "Forbidden",
    "MetricsDep",
    "RoleDep",
    "RunnerDep",
    "SearchKey",
    "SearchContext",
    "SearchContextDep",
    "ServiceDep",
    "SettingsDep",
    "Unauthorized",
    "caller_role",
    "get_metrics",
    "get_runner",
    "get_service",
    "get_settings",
    "require",
    "in_pool",
    "role_of",
    "search_context",
]
