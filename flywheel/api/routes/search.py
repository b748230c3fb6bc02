"""The search route: validate the query against the settings' limits, search, answer, and log what was shown.

The route is `async`: it validates on the event loop and sends only the blocking search (encode, engine, render,
queue the log) to the search pool, in one hop. A well-formed search is usually answered before it reaches this
route, by `flywheel.api.search_fast` with the same `checked_k` and `answer`; this route answers everything else
(and documents the route in the OpenAPI schema).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fastapi import APIRouter, Response

from flywheel.api.deps import SearchContextDep, in_pool
from flywheel.api.prometheus import Metrics
from flywheel.api.schemas import ExperimentOut, HitOut, SearchIn, SearchOut, control_char
from flywheel.config import Settings
from flywheel.errors import InvalidInput
from flywheel.serve.service import SearchResult, Service

log = logging.getLogger(__name__)

T = TypeVar("T")

router = APIRouter()


def checked_k(body: SearchIn, settings: Settings) -> int:
    """The number of hits a valid search asks for (its k, or the default).

    Raises:
        InvalidInput: the query, k or an id breaks the settings' limits (the message says which, and how).
    """
    if not body.query.strip():
        raise InvalidInput("query must not be empty")
    if len(body.query) > settings.max_query_chars:
        raise InvalidInput(f"query is {len(body.query)} characters; the limit is {settings.max_query_chars}")
    if control_char(body.query) is not None:
        raise InvalidInput("query contains control characters; send plain text")
    k = settings.default_k if body.k is None else body.k
    if not 1 <= k <= settings.max_k:
        raise InvalidInput(f"k must be between 1 and {settings.max_k}; got {k}")
    for name in ("user_id", "session_id"):
        value = getattr(body, name)
        if value is not None and len(value) > settings.max_id_chars:
            raise InvalidInput(f"{name} is over {settings.max_id_chars} characters")
    return k


def render(result: SearchResult) -> tuple[SearchResult, bytes]:
    """The answer's JSON body (made before the service logs the search: an answer that cannot be made logs
    nothing), with the result it was made from."""
    hits = [
        HitOut(doc_id=h.doc_id, text=h.text, score=h.score, rank=i, metadata=h.metadata)
        for i, h in enumerate(result.hits, start=1)
    ]
    out = SearchOut(
        search_id=result.search_id,
        model_version=result.model_version,
        hits=hits,
        experiment=ExperimentOut(**result.experiment) if result.experiment else None,
    )
    # Outside an online test the answer keeps its original three keys.
    return result, out.model_dump_json(exclude={"experiment"} if out.experiment is None else None).encode()


def _timed(fn: Callable[..., T], *args: Any) -> tuple[T, float]:
    """`fn(*args)` and the seconds it took on this thread (the search's own time, without the wait for it)."""
    started = time.perf_counter()
    return fn(*args), time.perf_counter() - started


def server_timing(result: SearchResult, search_s: float) -> str:
    """The Server-Timing header of an answered search (W3C Server Timing; durations in ms)."""
    t = result.timings
    return f"encode;dur={t.encode_s * 1e3:.2f}, engine;dur={t.engine_s * 1e3:.2f}, search;dur={search_s * 1e3:.2f}"


async def answer(
    service: Service, pool: ThreadPoolExecutor, body: SearchIn, k: int, settings: Settings, metrics: Metrics
) -> tuple[bytes, str | None]:
    """Search on the pool (encode, engine, render, queue the log), log the search's line and its timings.

    Returns:
        The JSON body, and the Server-Timing header's value (None when `Settings.server_timing` is off).
    """
    args = (body.query, k, render, body.user_id, body.session_id, body.filter)
    (result, text), search_s = await in_pool(pool, _timed, service.answer, *args)
    metrics.observe_search(result.timings.encode_s, result.timings.engine_s, search_s)
    log.info("search", extra={"search_id": result.search_id, "model_version": result.model_version, "k": k})
    return text, server_timing(result, search_s) if settings.server_timing else None


@router.post("/search", response_model=SearchOut, tags=["search"])
async def search(body: SearchIn, ctx: SearchContextDep) -> Response:
    """Nearest-neighbour search; the search and the hits shown are logged for feedback (any API key)."""
    k = checked_k(body, ctx.settings)
    text, timing = await answer(ctx.service, ctx.pool, body, k, ctx.settings, ctx.metrics)
    headers = {"server-timing": timing} if timing is not None else None
    return Response(text, media_type="application/json", headers=headers)
