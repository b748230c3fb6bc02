"""The search fast path: it answers well-formed searches itself, hands everything else to the app, and answers
exactly as the FastAPI route does (status, body, log, metrics, keys)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from flywheel.api.app import create_app
from flywheel.api.prometheus import Metrics
from flywheel.api.search_fast import SearchFastPath
from flywheel.config import Settings
from flywheel.errors import NotFound
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import make_documents


@pytest.fixture
def both(service: Service, settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """Two apps over one loaded service: with the fast path (the default) and with every search on the route."""
    service.upsert_documents(_docs())
    with (
        TestClient(create_app(settings, service=service)) as fast,
        TestClient(create_app(settings, service=service, fast_search=False)) as route,
    ):
        yield fast, route


def _docs() -> list[Document]:
    return [Document(d["id"], d["text"], d["metadata"]) for d in make_documents()]


def _same(fast: httpx.Response, route: httpx.Response) -> None:
    """The two answers agree: status, content type, and body (a search's id aside)."""
    assert fast.status_code == route.status_code, (fast.text, route.text)
    assert fast.headers["content-type"] == route.headers["content-type"]
    assert sorted(fast.headers) == sorted(route.headers)  # the same headers (Server-Timing on both)
    if fast.status_code != 200:
        assert fast.json() == route.json()
        return
    a, b = fast.json(), route.json()
    assert a.pop("search_id") != b.pop("search_id")  # two searches, each logged under its own id
    assert a == b


_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "query": st.one_of(st.text(max_size=30), st.just(""), st.just("  "), st.integers(), st.none()),
        "k": st.one_of(
            st.integers(-2, 120), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=3), st.none()
        ),
        "user_id": st.one_of(st.text(max_size=5), st.text(min_size=300, max_size=300), st.integers()),
        "session_id": st.one_of(st.text(max_size=5), st.none()),
        "filter": st.one_of(
            st.none(),
            st.dictionaries(st.sampled_from(["tenant", "bad key", "lang"]), st.sampled_from(["a", 1, [], ["x"]])),
        ),
        "extra": st.just(1),
    },
)


@hyp_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=_FIELDS)
def test_fast_path_answers_as_the_route_does(both: tuple[TestClient, TestClient], payload: dict[str, Any]) -> None:
    fast, route = both
    _same(fast.post("/search", json=payload), route.post("/search", json=payload))


@pytest.mark.parametrize(
    ("content", "headers"),
    [
        (b'{"query": "python", "k": 2}', {"content-type": "application/json"}),
        (b'{"query": "python", "k": 2}', {"content-type": "application/json; charset=utf-8"}),
        (b'{"query": "python", "k": 2}', {"content-type": "text/plain"}),
        (b'{"query": "python", "k": 2}', {}),
        (b'{"query": "python", "k": 2, "k": 3}', {"content-type": "application/json"}),  # the last key wins
        (b'{"query": "\\ud800"}', {"content-type": "application/json"}),  # a lone surrogate
        (b'{"query": "python", "k": NaN}', {"content-type": "application/json"}),
        (b'{"query": "python", "k": 2.0}', {"content-type": "application/json"}),
        (b'{"query": "tab\\there"}', {"content-type": "application/json"}),
        (b"[1, 2]", {"content-type": "application/json"}),
        (b"{not json", {"content-type": "application/json"}),
        (b"", {"content-type": "application/json"}),
    ],
)
def test_fast_path_matches_the_route_on_raw_bodies(
    both: tuple[TestClient, TestClient], content: bytes, headers: dict[str, str]
) -> None:
    fast, route = both
    _same(
        fast.post("/search", content=content, headers=headers), route.post("/search", content=content, headers=headers)
    )


def test_keys_are_checked_alike(service: Service, settings: Settings) -> None:
    keyed = settings.model_copy(update={"search_keys": ["s3cret"], "admin_keys": ["adm1n"]})
    service.upsert_documents(_docs())
    with (
        TestClient(create_app(keyed, service=service)) as fast,
        TestClient(create_app(keyed, service=service, fast_search=False)) as route,
    ):
        for auth in (
            None,
            "Bearer s3cret",
            "Bearer adm1n",
            "bearer  s3cret ",
            "Bearer wrong",
            "Basic s3cret",
            "s3cret",
        ):
            headers = {"authorization": auth} if auth else {}
            a, b = (c.post("/search", json={"query": "python", "k": 2}, headers=headers) for c in (fast, route))
            _same(a, b)
            assert a.status_code == (200 if auth and "wrong" not in auth and auth.lower().startswith("bearer") else 401)


def test_fast_path_answers_itself_and_passes_the_rest_on(service: Service, settings: Settings) -> None:
    """Over an app that answers everything with 418, only requests the fast path must not answer see 418."""
    service.upsert_documents(_docs())

    async def teapot(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    pool = ThreadPoolExecutor(2)
    state = SimpleNamespace(settings=settings, service=service, search_pool=pool, metrics=Metrics())
    layer = SearchFastPath(teapot, state)
    try:
        client = TestClient(layer)  # no lifespan: the layer has nothing to start
        answer = client.post("/search", json={"query": "python", "k": 3})
        assert answer.status_code == 200
        body = answer.json()
        assert [h["rank"] for h in body["hits"]] == [1, 2, 3]
        assert int(answer.headers["content-length"]) == len(answer.content)
        service.store.flush_searches()
        assert service.store.query("SELECT k FROM searches WHERE search_id = ?", [body["search_id"]]) == [(3,)]
        assert client.post("/search", json={"query": ""}).status_code == 418  # the route's to refuse
        assert client.post("/search", content=b"{", headers={"content-type": "application/json"}).status_code == 418
        assert client.get("/search").status_code == 418
        assert client.post("/feedback", json={}).status_code == 418
    finally:
        pool.shutdown()


def test_service_errors_get_the_apps_status(
    both: tuple[TestClient, TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, route = both
    service = fast.app.state.service

    def no_model(*_: Any, **__: Any) -> Any:
        raise NotFound("no model is loaded yet")

    monkeypatch.setattr(service, "answer", no_model)
    _same(fast.post("/search", json={"query": "python"}), route.post("/search", json={"query": "python"}))
    assert fast.post("/search", json={"query": "python"}).json() == {"detail": "no model is loaded yet"}


def test_fast_searches_are_counted_under_the_route(both: tuple[TestClient, TestClient]) -> None:
    fast, _ = both
    for _ in range(3):
        assert fast.post("/search", json={"query": "python", "k": 2}).status_code == 200
    metrics = fast.get("/metrics").text
    line = next(x for x in metrics.splitlines() if x.startswith("flywheel_http_requests_total") and '"/search"' in x)
    assert 'method="POST"' in line and 'status="200"' in line
    assert float(line.rsplit(" ", 1)[1]) == 3


def test_search_log_line_is_kept(both: tuple[TestClient, TestClient], caplog: pytest.LogCaptureFixture) -> None:
    fast, _ = both
    with caplog.at_level("INFO", logger="flywheel.api.routes.search"):
        body = fast.post("/search", json={"query": "python", "k": 2}).json()
    assert [r.search_id for r in caplog.records if r.getMessage() == "search"] == [body["search_id"]]
    assert body["model_version"] == "v1"


def _stages(response: httpx.Response) -> dict[str, float]:
    """The Server-Timing header as {stage: ms}."""
    parts = (part.strip().partition(";dur=") for part in response.headers["server-timing"].split(","))
    return {name: float(ms) for name, _, ms in parts}


def test_both_paths_say_where_a_searchs_time_went(both: tuple[TestClient, TestClient]) -> None:
    """Server-Timing: the encoder's and the engine's share of the search's own time, on either path."""
    for client in both:
        stages = _stages(client.post("/search", json={"query": "python", "k": 2}))
        assert set(stages) == {"encode", "engine", "search"}
        assert stages["encode"] > 0 and stages["engine"] > 0
        # The search's time on its thread holds both stages (each rounded to 0.01 ms).
        assert stages["search"] >= stages["encode"] + stages["engine"] - 0.02


def test_server_timing_can_be_turned_off(service: Service, settings: Settings) -> None:
    service.upsert_documents(_docs())
    quiet = settings.model_copy(update={"server_timing": False})
    for fast_search in (True, False):
        with TestClient(create_app(quiet, service=service, fast_search=fast_search)) as client:
            answer = client.post("/search", json={"query": "python", "k": 2})
            assert answer.status_code == 200 and "server-timing" not in answer.headers
