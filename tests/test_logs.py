"""Structured logs: JSON lines (or text with key=value) carrying the search_id and cycle_id."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.runner import CycleRunner
from flywheel.logs import current_context, log_context, setup_logging
from flywheel.serve.service import Service


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """setup_logging replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_json_lines_carry_context_and_extras(restore_logging: None, capsys: pytest.CaptureFixture) -> None:
    setup_logging("info", "json")
    log = logging.getLogger("flywheel.test")
    with log_context(cycle_id="c1"):
        log.info("stage %s", "train", extra={"stage": "train"})
        assert current_context() == {"cycle_id": "c1"}
    log.warning("outside")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = json_lines(capsys.readouterr().err)
    assert lines[0]["message"] == "stage train" and lines[0]["cycle_id"] == "c1" and lines[0]["stage"] == "train"
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "flywheel.test" and lines[0]["ts"].endswith("+00:00")
    assert "cycle_id" not in lines[1]
    assert "ValueError: boom" in lines[2]["exc"]


def test_text_format_appends_fields(restore_logging: None, capsys: pytest.CaptureFixture) -> None:
    setup_logging("info", "text")
    with log_context(cycle_id="c2"):
        logging.getLogger("flywheel.test").info("hello")
    err = capsys.readouterr().err
    assert "INFO flywheel.test: hello cycle_id=c2" in err


def test_search_logs_its_search_id(loaded_api: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flywheel.api")
    body = loaded_api.post("/search", json={"query": "learn python", "k": 2}).json()
    records = [r for r in caplog.records if getattr(r, "search_id", None) == body["search_id"]]
    assert len(records) == 1 and records[0].model_version == "v1"


def test_cycle_log_lines_carry_the_cycle_id(
    service: Service, restore_logging: None, capsys: pytest.CaptureFixture
) -> None:
    setup_logging("info", "json")
    reports: list[CycleReport] = []
    record = CycleRunner(service, on_finish=reports.append).run("test")
    assert record["state"] == "rejected"  # no feedback yet: nothing to train on
    tagged = [line for line in json_lines(capsys.readouterr().err) if line.get("cycle_id") == record["cycle_id"]]
    assert any("mine" in line["message"] for line in tagged)
    assert [r.decision for r in reports] == ["rejected"] and reports[0].cycle_id == record["cycle_id"]
