"""The app factory: lifespan, guards, error translation, the routers and Prometheus, over one `Service`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from flywheel import __version__
from flywheel.api.deps import ERROR_STATUS, SearchKey
from flywheel.api.guards import BodyLimit, LoopbackOnly, SafeJSON, error_response
from flywheel.api.prometheus import Metrics, install
from flywheel.api.routes import ROUTERS
from flywheel.api.schemas import ERROR_STATUSES, ErrorOut
from flywheel.api.search_fast import SearchFastPath
from flywheel.config import Settings
from flywheel.cycle.runner import CycleRunner
from flywheel.serve.service import Service

log = logging.getLogger(__name__)


# --- errors ----------------------------------------------------------------------------------------------


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, safely encoded."""
    return SafeJSON({"detail": jsonable_encoder(exc.errors())}, status_code=422)


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return error_response(status, str(exc))

    return handle


def route_table(app: FastAPI) -> list[BaseRoute]:
    """The app's own routes, then every router's, flat: /metrics matches refused requests to templates here.

    FastAPI keeps an included router as one opaque entry in `app.router.routes`; the routers hold the routes.
    """
    return [r for r in app.router.routes if isinstance(r, Route)] + [r for router in ROUTERS for r in router.routes]


# --- the app ----------------------------------------------------------------------------------------------


def create_app(settings: Settings, service: Service | None = None, fast_search: bool = True) -> FastAPI:
    """Build the FastAPI app.

    Args:
        settings: the settings (never read from globals).
        service: an already-open Service to serve (tests, embedding); default: opened in the lifespan
            from `settings` and closed on shutdown.
        fast_search: answer well-formed searches in `flywheel.api.search_fast` (False: every search goes through
            the FastAPI route; the two answer alike, tests compare them).

    Returns:
        The app.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = Service.open(settings, progress=True) if owned else service
        app.state.runner = CycleRunner(app.state.service, on_finish=metrics.observe_cycle)
        app.state.runner.recover()
        app.state.runner.start_schedule(settings)
        app.state.search_pool = ThreadPoolExecutor(settings.search_threads, thread_name_prefix="search")
        if not settings.auth_enabled:
            log.warning(
                "no API keys configured: every route is open to this machine only (loopback Host names, "
                "no foreign Origin); serve on 127.0.0.1 only"
            )
        try:
            yield
        finally:
            app.state.search_pool.shutdown(wait=True)  # answered searches are queued in the store: logged at close
            # A cycle must not have DuckDB and Qdrant closed under it: stop it at its next stage, wait, then
            # close under the serving lock so no swap is cut halfway.
            if not app.state.runner.shutdown(wait=settings.shutdown_timeout_s):
                log.warning(
                    "a cycle is still running after %.0f s; closing (restart recovery cleans up)",
                    settings.shutdown_timeout_s,
                )
            if owned:
                app.state.service.close()

    app = FastAPI(
        title="flywheel",
        version=__version__,
        description="Retrieval with a feedback loop: search, send clicks and skips, and let the model improve.",
        lifespan=lifespan,
        responses={status: {"model": ErrorOut} for status in ERROR_STATUSES},
        # The schema and its pages are public when served (a browser cannot send a key for them) or absent.
        openapi_url="/openapi.json" if settings.openapi_docs else None,
        docs_url="/docs" if settings.openapi_docs else None,
        redoc_url="/redoc" if settings.openapi_docs else None,
    )
    app.state.settings = settings
    if fast_search:  # innermost of these layers: the body limit, loopback guard and metrics hold for it too
        app.add_middleware(SearchFastPath, state=app.state)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    if not settings.auth_enabled:  # outside the body limit: a refused page's body is never read
        app.add_middleware(LoopbackOnly)
    metrics = app.state.metrics = Metrics()
    metrics.watch_service(lambda: getattr(app.state, "service", None))
    install(app, metrics, [] if settings.metrics_public else [SearchKey], routes=lambda: route_table(app))

    for exc_type, status in ERROR_STATUS:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation_error)

    for router in ROUTERS:
        app.include_router(router)
    return app
