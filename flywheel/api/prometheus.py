"""Prometheus metrics: one registry per app (never the global one), request middleware, and `GET /metrics`.

What is exported (names as Prometheus shows them):
- `flywheel_http_requests_total{method,route,status}` and `flywheel_http_request_duration_seconds{method,route}`:
  per route *template* (`/documents/{doc_id}`), so ids never become labels; unknown paths are `route="unmatched"`
  and methods outside the standard ones `method="other"`, so no client can add series.
- `flywheel_search_stage_duration_seconds{stage}`: where a search's time goes, stage `encode` (the query
  encoder), `engine` (the vector index) and `search` (the whole search on its thread: both, plus ranking,
  rendering and logging); what HTTP adds is the request duration minus `search`.
- `flywheel_feedback_events_total{outcome}`: accepted, duplicate, rejected (events of a refused batch).
- `flywheel_cycles_total{outcome}`: promoted, rejected, failed.
- `flywheel_cycle_stage_duration_seconds{stage}` and `flywheel_cycle_duration_seconds`.
- `flywheel_model_version_info{version}` = 1 for the version that serves; `flywheel_alias_consistent` = 1 while
  the Qdrant alias points at that version's collection (0: someone else moved it, see deploy/README.md);
  `flywheel_documents`.
- While an online test runs: `flywheel_online_test_searches{cycle_id,mode}` (its interleaved or shadow searches)
  and `flywheel_online_test_outcomes{cycle_id,outcome}` (the candidate's wins, losses and ties); one test at a
  time, so the labels stay bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.routing import Match

from flywheel.cycle.online import summary as online_summary
from flywheel.cycle.report.model import CycleReport

log = logging.getLogger(__name__)

FEEDBACK_OUTCOMES = ("accepted", "duplicate", "rejected")
CYCLE_OUTCOMES = ("promoted", "rejected", "failed")
SEARCH_STAGES = ("encode", "engine", "search")
# Cycle stages take seconds to hours; request latencies milliseconds to seconds.
_STAGE_BUCKETS = (0.5, 1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
# A search's stages take from a tenth of a millisecond (the engine on a small corpus) up.
_SEARCH_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)
_REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# Methods kept as label values; anything a client makes up is counted as "other" (labels stay bounded).
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The metrics of one app, in a registry of its own (tests build many apps in one process)."""

    def __init__(self) -> None:
        """Create the registry and every metric, with the fixed label values pre-set to zero."""
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "flywheel_http_requests",
            "HTTP requests by route template, method and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "flywheel_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=_REQUEST_BUCKETS,
            registry=r,
        )
        self.search_stage = Histogram(
            "flywheel_search_stage_duration_seconds",
            "Time of each stage of a search: encode, engine, and the whole search on its thread",
            ["stage"],
            buckets=_SEARCH_BUCKETS,
            registry=r,
        )
        self.feedback_events = Counter(
            "flywheel_feedback_events", "Feedback events by outcome", ["outcome"], registry=r
        )
        self.cycles = Counter("flywheel_cycles", "Retraining cycles by outcome", ["outcome"], registry=r)
        self.stage_duration = Histogram(
            "flywheel_cycle_stage_duration_seconds",
            "Duration of each cycle stage",
            ["stage"],
            buckets=_STAGE_BUCKETS,
            registry=r,
        )
        self.cycle_duration = Histogram(
            "flywheel_cycle_duration_seconds", "Duration of whole cycles", buckets=_STAGE_BUCKETS, registry=r
        )
        for outcome in FEEDBACK_OUTCOMES:
            self.feedback_events.labels(outcome)
        for outcome in CYCLE_OUTCOMES:
            self.cycles.labels(outcome)
        # Looked up once: the search path observes them on every search.
        self._stages = tuple(self.search_stage.labels(stage) for stage in SEARCH_STAGES)

    def observe_search(self, encode_s: float, engine_s: float, search_s: float) -> None:
        """Record the stages of one answered search (seconds)."""
        for child, seconds in zip(self._stages, (encode_s, engine_s, search_s), strict=True):
            child.observe(seconds)

    def observe_feedback(self, accepted: int, duplicates: int) -> None:
        """Count a stored feedback batch."""
        self.feedback_events.labels("accepted").inc(accepted)
        self.feedback_events.labels("duplicate").inc(duplicates)

    def observe_rejected(self, events: int) -> None:
        """Count the events of a feedback batch that was refused (nothing of it was stored)."""
        self.feedback_events.labels("rejected").inc(events)

    def observe_cycle(self, report: CycleReport) -> None:
        """Record a finished cycle from its report: outcome, per-stage timings and total duration."""
        self.cycles.labels(report.decision if report.decision in CYCLE_OUTCOMES else "failed").inc()
        for stage, seconds in report.timings.items():
            self.stage_duration.labels(stage).observe(float(seconds))
        if report.duration_s is not None:
            self.cycle_duration.observe(report.duration_s)

    def watch_service(self, get_service: Callable[[], Any]) -> None:
        """Export the serving state (model version, alias consistency, corpus size), read at scrape time."""
        self.registry.register(_ServingCollector(get_service))

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class _ServingCollector(Collector):
    """Reads the live Service at scrape time, so the gauges can never be stale."""

    def __init__(self, get_service: Callable[[], Any]) -> None:
        self.get_service = get_service

    def describe(self) -> list[Any]:
        return []  # nothing to check at registration: the service may not be open yet

    def collect(self) -> Iterator[Any]:
        service = self.get_service()
        if service is None:
            return
        info = GaugeMetricFamily(
            "flywheel_model_version_info", "The model version that serves (value 1)", labels=["version"]
        )
        # An adapter serves on its base's collection: the label names what answers, the alias check the base.
        info.add_metric([service.serving_version], 1)
        yield info
        try:
            consistent = service.index.serving_version() == service.encoder.version
        except Exception:  # a scrape must not fail because Qdrant is briefly unreachable
            log.warning("metrics: cannot read the Qdrant alias", exc_info=True)
        else:
            yield GaugeMetricFamily(
                "flywheel_alias_consistent",
                "1 while the Qdrant alias points at the serving version's collection",
                value=int(consistent),
            )
        yield GaugeMetricFamily("flywheel_documents", "Documents in the corpus", value=service.store.count_documents())
        experiment = service.experiment
        if experiment is not None:
            yield from _online_gauges(online_summary(service.store, experiment, service.settings))


def _online_gauges(state: dict[str, Any]) -> Iterator[Any]:
    """The running online test's counts as gauges."""
    cycle_id = state["cycle_id"]
    searches = GaugeMetricFamily(
        "flywheel_online_test_searches", "Searches of the running online test", labels=["cycle_id", "mode"]
    )
    searches.add_metric([cycle_id, state["mode"]], state["searches"])
    yield searches
    if state["mode"] == "interleave":
        outcomes = GaugeMetricFamily(
            "flywheel_online_test_outcomes",
            "The candidate's wins, losses and ties on interleaved lists",
            labels=["cycle_id", "outcome"],
        )
        for outcome, key in (("win", "wins"), ("loss", "losses"), ("tie", "ties")):
            outcomes.add_metric([cycle_id, outcome], state[key])
        yield outcomes


class MetricsMiddleware:
    """ASGI middleware: count and time every HTTP request by method, route template and status."""

    def __init__(self, app: Any, metrics: Metrics, routes: Callable[[], list[Any]]) -> None:
        """Args: app: the wrapped ASGI app; metrics: where to record; routes: the app's routes (for templates)."""
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if the app raises before answering
        started = time.perf_counter()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = self._template(scope)
            method = scope["method"] if scope["method"] in HTTP_METHODS else "other"
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - started)

    def _template(self, scope: dict[str, Any]) -> str:
        """The matched route's path template; requests refused before routing (e.g. 413) are matched here."""
        route = scope.get("route")
        if route is not None and getattr(route, "path", None):
            return _label(route)
        for candidate in self.routes():
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return _label(candidate)
        return "unmatched"


def _label(route: Any) -> str:
    """A route's template without converters (`/documents/{doc_id}`, also for `{doc_id:path}`)."""
    return getattr(route, "path_format", None) or route.path


def install(
    app: FastAPI, metrics: Metrics, dependencies: list[Any], routes: Callable[[], list[Any]] | None = None
) -> None:
    """Add the request middleware (outermost, so refused requests count too) and `GET /metrics`.

    Args:
        app: the FastAPI app.
        metrics: the app's Metrics.
        dependencies: FastAPI dependencies guarding /metrics (empty: public).
        routes: the routes to match path templates against, flat and in order; default: `app.router.routes`.
    """
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=routes or (lambda: app.router.routes))

    @app.get("/metrics", dependencies=dependencies, tags=["ops"], response_class=Response)
    def get_metrics() -> Response:
        """Prometheus metrics (text format): requests, feedback, cycles, the serving version."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)


__all__ = ["CYCLE_OUTCOMES", "FEEDBACK_OUTCOMES", "HTTP_METHODS", "Metrics", "MetricsMiddleware", "install"]
