"""HTTP API: search, feedback, documents, health and stats, over one `Service` opened in the lifespan."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from flywheel import __version__
from flywheel.api.prometheus import Metrics, install
from flywheel.api.schemas import (
    CycleIn,
    CycleOut,
    CycleStarted,
    DocumentIn,
    DocumentsIn,
    ErrorOut,
    FeedbackIn,
    FeedbackOut,
    HealthOut,
    HitOut,
    RollbackIn,
    RollbackOut,
    SearchIn,
    SearchOut,
    StatsOut,
    UpsertOut,
)
from flywheel.config import Settings
from flywheel.cycle.report.files import list_reports, load_report, report_html_path
from flywheel.cycle.runner import CycleRunner
from flywheel.errors import Conflict, FlywheelError, InvalidInput, NotFound, PayloadTooLarge, StoreLocked
from flywheel.serve.service import Service
from flywheel.serve.versions import rollback
from flywheel.types import Document, Event

log = logging.getLogger(__name__)

# --- dependencies -----------------------------------------------------------------------------------------


def get_service(request: Request) -> Service:
    """The Service opened in the lifespan."""
    return request.app.state.service


def get_runner(request: Request) -> CycleRunner:
    """The cycle runner started in the lifespan."""
    return request.app.state.runner


ServiceDep = Annotated[Service, Depends(get_service)]
RunnerDep = Annotated[CycleRunner, Depends(get_runner)]
_bearer = HTTPBearer(auto_error=False)


def _role_of(settings: Settings, key: str) -> str | None:
    """Which role a key has; constant-time comparisons so keys cannot be guessed by timing."""
    role = None
    for candidate in settings.admin_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            role = "admin"
    for candidate in settings.search_keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            role = role or "search"
    return role


def _require(role: str) -> Callable[..., None]:
    def check(
        request: Request,
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> None:
        settings: Settings = request.app.state.settings
        if not settings.auth_enabled:
            return
        if creds is None:
            raise _Unauthorized("missing API key: send `Authorization: Bearer <key>`")
        have = _role_of(settings, creds.credentials)
        if have is None:
            raise _Unauthorized("invalid API key")
        if role == "admin" and have != "admin":
            raise _Forbidden("this route needs an admin key; a search key was given")

    return check


class _Unauthorized(FlywheelError):
    pass


class _Forbidden(FlywheelError):
    pass


SearchRole = Depends(_require("search"))
AdminRole = Depends(_require("admin"))

_STATUS: list[tuple[type[Exception], int]] = [
    (PayloadTooLarge, 413),
    (InvalidInput, 422),
    (NotFound, 404),
    (Conflict, 409),
    (StoreLocked, 503),
    (_Unauthorized, 401),
    (_Forbidden, 403),
]


_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 503)
_JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    for status in _ERROR_STATUSES
}

# --- body guard -------------------------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with 413 before anything parses it."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send, f"request body is {int(declared)} bytes")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(scope, receive, send, "request body is too large")
                return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: dict[str, Any], receive: Any, send: Any, what: str) -> None:
        response = _error(413, f"{what}; the limit is {self.limit} bytes (max_body_bytes): send smaller batches")
        await response(scope, receive, send)


class _SafeJSON(JSONResponse):
    """JSON escaped to ASCII: an error that echoes hostile input (a lone surrogate) still encodes."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def _error(status: int, message: str) -> JSONResponse:
    return _SafeJSON({"detail": message}, status_code=status)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 body, safely encoded."""
    return _SafeJSON({"detail": jsonable_encoder(exc.errors())}, status_code=422)


# --- the app ----------------------------------------------------------------------------------------------


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """Build the FastAPI app.

    Args:
        settings: the settings (never read from globals).
        service: an already-open Service to serve (tests, embedding); default: opened in the lifespan
            from `settings` and closed on shutdown.

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
        if not settings.auth_enabled:
            log.warning("no API keys configured: every route is open; serve on 127.0.0.1 only")
        try:
            yield
        finally:
            app.state.runner.shutdown()
            if owned:
                app.state.service.close()

    app = FastAPI(
        title="flywheel",
        version=__version__,
        description="Retrieval with a feedback loop: search, send clicks and skips, and let the model improve.",
        lifespan=lifespan,
        responses={status: {"model": ErrorOut} for status in _ERROR_STATUSES},
    )
    app.state.settings = settings
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    metrics = app.state.metrics = Metrics()
    metrics.watch_service(lambda: getattr(app.state, "service", None))
    install(app, metrics, [] if settings.metrics_public else [SearchRole])

    for exc_type, status in _STATUS:
        app.add_exception_handler(exc_type, _handler(status))
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.post("/documents", response_model=UpsertOut, dependencies=[AdminRole], tags=["documents"])
    def post_documents(body: DocumentsIn, svc: ServiceDep) -> UpsertOut:
        """Add or replace documents (embedded with the serving model)."""
        _check_documents(settings, body.documents)
        docs = [Document(d.id, d.text, d.metadata) for d in body.documents]
        return UpsertOut(upserted=svc.upsert_documents(docs))

    @app.delete("/documents/{doc_id}", status_code=204, dependencies=[AdminRole], tags=["documents"])
    def delete_document(doc_id: str, svc: ServiceDep) -> Response:
        """Delete a document; 404 if unknown."""
        svc.delete_document(doc_id)
        return Response(status_code=204)

    @app.post("/search", response_model=SearchOut, dependencies=[SearchRole], tags=["search"])
    def search(body: SearchIn, svc: ServiceDep) -> SearchOut:
        """Nearest-neighbour search; the search and the hits shown are logged for feedback."""
        query = body.query.strip()
        if not query:
            raise InvalidInput("query must not be empty")
        if len(body.query) > settings.max_query_chars:
            raise InvalidInput(f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}")
        if _has_control_chars(body.query):
            raise InvalidInput("query contains control characters; send plain text")
        k = settings.default_k if body.k is None else body.k
        if not 1 <= k <= settings.max_k:
            raise InvalidInput(f"k must be between 1 and {settings.max_k}; got {k}")
        for name in ("user_id", "session_id"):
            value = getattr(body, name)
            if value is not None and len(value) > settings.max_id_chars:
                raise InvalidInput(f"{name} is over {settings.max_id_chars} characters")
        result = svc.search(body.query, k, body.user_id, body.session_id)
        log.info("search", extra={"search_id": result.search_id, "model_version": result.model_version, "k": k})
        hits = [
            HitOut(doc_id=h.doc_id, text=h.text, score=h.score, rank=i, metadata=h.metadata)
            for i, h in enumerate(result.hits, start=1)
        ]
        return SearchOut(search_id=result.search_id, model_version=result.model_version, hits=hits)

    @app.post("/feedback", response_model=FeedbackOut, dependencies=[SearchRole], tags=["search"])
    def feedback(body: FeedbackIn, svc: ServiceDep) -> FeedbackOut:
        """Record clicks and skips; all-or-nothing per batch, idempotent by event_id."""
        try:
            accepted, duplicates = _store_feedback(settings, body, svc)
        except FlywheelError:
            metrics.observe_rejected(len(body.events))
            raise
        metrics.observe_feedback(accepted, duplicates)
        return FeedbackOut(accepted=accepted, duplicates=duplicates)

    @app.get("/healthz", response_model=HealthOut, dependencies=[SearchRole], tags=["ops"])
    def healthz(svc: ServiceDep) -> HealthOut:
        """Health, the serving model version and the corpus size."""
        return HealthOut(**svc.health())

    @app.get("/livez", tags=["ops"])
    def livez() -> dict[str, str]:
        """Unauthenticated liveness probe for load balancers; says nothing about the data."""
        return {"status": "ok"}

    @app.get("/stats", response_model=StatsOut, dependencies=[SearchRole], tags=["ops"])
    def stats(svc: ServiceDep) -> StatsOut:
        """Row counts of the event store."""
        return StatsOut(**svc.store.stats())

    @app.get("/models", dependencies=[SearchRole], tags=["models"])
    def get_models(svc: ServiceDep) -> dict[str, Any]:
        """The incumbent, every version with its meta.json, and the promotion history."""
        return {
            "incumbent": svc.registry.incumbent().to_dict(),
            "serving": svc.serving_version,
            "versions": [v.to_dict() for v in svc.registry.versions()],
            "history": svc.registry.history(),
        }

    @app.post("/models/rollback", response_model=RollbackOut, dependencies=[AdminRole], tags=["models"])
    def post_rollback(body: RollbackIn, svc: ServiceDep, runner: RunnerDep) -> RollbackOut:
        """Serve a kept earlier version again (alias and encoder switch together)."""
        if runner.running():
            raise Conflict("a cycle is running; roll back after it finished")
        previous = svc.serving_version
        entry = rollback(svc, body.to)
        return RollbackOut(model_version=entry.version, previous=previous)

    @app.post("/cycles", status_code=202, response_model=CycleStarted, dependencies=[AdminRole], tags=["cycles"])
    def post_cycle(runner: RunnerDep, body: CycleIn | None = None) -> CycleStarted:
        """Start a retraining cycle now (optional body {"mode": "adapter"|"full"|"auto"}); 409 if one is running."""
        return CycleStarted(cycle_id=runner.start("api", mode=body.mode if body else None))

    @app.get("/cycles", response_model=list[CycleOut], dependencies=[AdminRole], tags=["cycles"])
    def get_cycles(runner: RunnerDep) -> list[CycleOut]:
        """Recent cycles, newest first."""
        return [CycleOut(**c) for c in runner.list()]

    @app.get("/cycles/{cycle_id}", response_model=CycleOut, dependencies=[AdminRole], tags=["cycles"])
    def get_cycle(cycle_id: str, runner: RunnerDep) -> CycleOut:
        """A cycle's state and stage."""
        return CycleOut(**runner.get(cycle_id))

    @app.get("/reports", dependencies=[AdminRole], tags=["reports"])
    def get_reports() -> list[dict[str, Any]]:
        """Promotion reports, newest first (summaries)."""
        return list_reports(settings.reports_dir)

    @app.get("/reports/{cycle_id}", dependencies=[AdminRole], tags=["reports"])
    def get_report(cycle_id: str) -> dict[str, Any]:
        """One report.json: decision, reasons, metrics with CIs, counts, training, examples."""
        return load_report(settings.reports_dir, cycle_id)

    @app.get(
        "/reports/{cycle_id}/html",
        response_class=HTMLResponse,
        dependencies=[AdminRole],
        tags=["reports"],
        responses=_JSON_ERRORS,  # the page is HTML; its errors are JSON like everywhere else
    )
    def get_report_html(cycle_id: str) -> HTMLResponse:
        """The self-contained HTML report for a person to review."""
        return HTMLResponse(report_html_path(settings.reports_dir, cycle_id).read_text(encoding="utf-8"))

    return app


def _handler(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return _error(status, str(exc))

    return handle


def _has_control_chars(text: str) -> bool:
    """True for C0/C1 control characters other than tab and newlines (they break logs and tokenizers)."""
    return any((ord(c) < 32 and c not in "\t\n\r") or 127 <= ord(c) < 160 for c in text)


def _check_documents(settings: Settings, docs: list[DocumentIn]) -> None:
    """Apply the settings' limits to a documents batch; the message names the first bad document."""
    if not docs:
        raise InvalidInput("documents must not be empty")
    if len(docs) > settings.max_documents_per_request:
        raise PayloadTooLarge(
            f"{len(docs)} documents in one request; the limit is {settings.max_documents_per_request}"
        )
    for i, d in enumerate(docs):
        if len(d.id) > settings.max_id_chars:
            raise InvalidInput(f"documents[{i}].id is over {settings.max_id_chars} characters")
        if not d.text.strip():
            raise InvalidInput(f"documents[{i}].text must not be blank")
        if len(d.text) > settings.max_document_chars:
            raise InvalidInput(
                f"documents[{i}].text is {len(d.text)} characters; the limit is {settings.max_document_chars}"
            )
        if len(json.dumps(d.metadata, ensure_ascii=False)) > settings.max_metadata_bytes:
            raise InvalidInput(f"documents[{i}].metadata is over {settings.max_metadata_bytes} bytes as JSON")


def _store_feedback(settings: Settings, body: FeedbackIn, svc: Service) -> tuple[int, int]:
    """Apply the limits to a feedback batch and store it; returns (accepted, duplicates)."""
    if not body.events:
        raise InvalidInput("events must not be empty")
    if len(body.events) > settings.max_events_per_request:
        raise PayloadTooLarge(
            f"{len(body.events)} events in one request; the limit is {settings.max_events_per_request}"
        )
    for i, e in enumerate(body.events):
        for name in ("event_id", "search_id", "doc_id"):
            if len(getattr(e, name)) > settings.max_id_chars:
                raise InvalidInput(f"events[{i}].{name} is over {settings.max_id_chars} characters")
    events = [Event(e.event_id, e.search_id, e.doc_id, e.type, e.ts) for e in body.events]
    return svc.feedback(events)
