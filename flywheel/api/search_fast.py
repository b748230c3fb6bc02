"""POST /search's fast path: a well-formed search answered without FastAPI's routing and dependency solving.

FastAPI's handling of the search route (routing through the included routers, solving the key dependency,
parsing the body as JSON and then as the model) cost about 0.1-0.25 ms a search on a 2-core machine, as much
as the Edge engine's query at 10,000 documents. This ASGI layer answers a search whose body is JSON valid for
`SearchIn`, whose key is valid and whose limits hold, with the route's own `checked_k` and `answer` (the same
pool hop, rendering and log line); every other request goes on to the app unchanged, and the search route
answers it, so every error keeps its one shape and wording (tests/api/test_search_fast.py compares the two on
generated bodies). It sits inside the body limit, the loopback guard and the request metrics, so they hold
for it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from flywheel.api.deps import ERROR_STATUS, role_of
from flywheel.api.guards import error_response, read_body, replay
from flywheel.api.routes.search import answer, checked_k
from flywheel.api.routes.search import router as search_router
from flywheel.api.schemas import SearchIn
from flywheel.errors import FlywheelError, InvalidInput

_STATUS = dict(ERROR_STATUS)
_JSON = (b"application/json", b"application/json; charset=utf-8")


class SearchFastPath:
    """ASGI middleware: answer a well-formed `POST /search` here; pass everything else to the app."""

    def __init__(self, app: Any, state: Any) -> None:
        """Args: app: the wrapped ASGI app; state: the app's state (settings now; service and pool once the
        lifespan made them)."""
        self.app = app
        self.state = state
        self.route = next(r for r in search_router.routes if getattr(r, "path", None) == "/search")

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/search":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        if body is None:  # the client went away
            return
        request = self._parse(scope, body)
        if request is None:  # not for the fast path: the route answers, with its own error if there is one
            await self.app(scope, replay(body, receive), send)
            return
        query, k = request
        try:
            state = self.state
            text, timing = await answer(state.service, state.search_pool, query, k, state.settings, state.metrics)
        except FlywheelError as exc:  # the app's exception handlers are inside this layer: the same mapping here
            # Looked up along the error's class hierarchy, most specific first, as Starlette finds a handler.
            status = next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), None)
            if status is None:
                raise
            await error_response(status, str(exc))(scope, receive, send)
            return
        scope["route"] = self.route  # the request metrics label it with the route's template
        headers = [(b"content-length", str(len(text)).encode()), (b"content-type", b"application/json")]
        if timing is not None:
            headers.append((b"server-timing", timing.encode("latin-1")))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})

    def _parse(self, scope: dict[str, Any], body: bytes) -> tuple[SearchIn, int] | None:
        """The search and its k when the fast path may answer it: JSON, a valid key, a valid body; else None."""
        headers = dict(scope["headers"])
        if headers.get(b"content-type", b"").lower() not in _JSON:
            return None
        settings = self.state.settings
        if settings.auth_enabled:
            scheme, _, key = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if scheme.lower() != "bearer" or role_of(settings, key.strip()) is None:
                return None
        try:
            query = SearchIn.model_validate_json(body)
            return query, checked_k(query, settings)
        except (ValidationError, InvalidInput):
            return None


__all__ = ["SearchFastPath"]
