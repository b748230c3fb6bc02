"""The online test's loop: users' clicks decide (promote or reject), an operator or a shutdown ends it early,
the limits end it undecided, and shadow mode promotes with its evidence."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from flywheel.cycle.online import run_online_test
from flywheel.cycle.report.model import CycleReport
from flywheel.errors import Cancelled
from flywheel.serve.ledger import experiment_searches, labelled_rows
from flywheel.serve.service import Service
from flywheel.types import Document, Event
from flywheel.util.files import now_iso, utcnow
from tests.helpers.factories import world_documents
from tests.helpers.server import second_version

QUERIES = ["good guitar tips", "learn python", "pasta recipe", "running shoes", "how to tune a guitar"]


@pytest.fixture
def two_versions(service: Service, tmp_path: Path) -> tuple[Service, Any]:
    """A serving v1 and a fine-tuned-like v2 with its own complete collection."""
    service.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
    _, v2, _ = second_version(service, tmp_path / "v2-model", QUERIES[0])
    return service, v2


class Users:
    """Search until told to stop; click the first hit of the team they prefer (None: never click)."""

    def __init__(self, service: Service, prefer: str | None) -> None:
        self.service, self.prefer = service, prefer
        self.done = threading.Event()
        self.versions: set[str] = set()
        self.errors: list[BaseException] = []
        self.searches = 0

    def run(self) -> None:
        try:
            while not self.done.is_set():
                result = self.service.search(QUERIES[self.searches % len(QUERIES)], 5)
                self.searches += 1
                self.versions.add(result.model_version)
                if result.experiment and "challenger" in result.experiment:
                    self.versions.add(result.experiment["challenger"])
                if self.prefer is None:
                    time.sleep(0.01)
                    continue
                rows = self.service.store.query(
                    "SELECT doc_id FROM impressions WHERE search_id = ? AND team = ? ORDER BY rank LIMIT 1",
                    [result.search_id, self.prefer],
                )
                if rows:
                    self.service.feedback([Event(uuid.uuid4().hex, result.search_id, rows[0][0], "click")])
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def run_test(
    two_versions: tuple[Service, Any], prefer: str | None, stop: str | None = None, **overrides: Any
) -> tuple[bool | BaseException, CycleReport, Users]:
    """Run the online test with users in a thread; with `stop`, request it once the test runs."""
    service, v2 = two_versions
    service.settings = service.settings.model_copy(
        update={"online_test": "interleave", "interleave_fraction": 1.0, "interleave_check_seconds": 0.2, **overrides}
    )
    report = CycleReport(cycle_id="c-online", created_at=now_iso(), kind="full", incumbent="v1")
    users = Users(service, prefer)
    thread = threading.Thread(target=users.run, daemon=True)
    thread.start()
    if stop is not None:
        threading.Timer(0.5, lambda: service.experiment.request_stop(stop)).start()
    try:
        outcome: bool | BaseException = run_online_test(service, report, "v2", v2, None)
    except Cancelled as exc:
        outcome = exc
    finally:
        users.done.set()
        thread.join(30)
    assert not users.errors, users.errors
    assert service.experiment is None  # ended before the cycle swaps or discards
    assert users.versions <= {"v1", "v2"}  # no answer mixed in anything but the two versions under test
    return outcome, report, users


def test_users_who_prefer_the_challengers_results_promote_it(two_versions: tuple[Service, Any]) -> None:
    outcome, report, _ = run_test(two_versions, prefer="challenger")
    online = report.online
    assert outcome is True and online["verdict"] == "challenger" and online["decision"] == "promote"
    assert online["wins"] > 0 and online["losses"] == 0 and online["band"][0] > 0.5
    assert online["series"] and online["series"][-1]["wins"] == online["wins"]
    assert report.checks[-1] == {"name": "online_test", "passed": True, "detail": online["reason"]}
    # The interleaved lists' feedback is training data like any other, at the ranks users saw.
    service = two_versions[0]
    interleaved = {sid for sid, _ in experiment_searches(service.store, "c-online", "interleaved")}
    mined = [row for row in labelled_rows(service.store, utcnow(), None) if row[0] in interleaved]
    assert any(row[3] == 1 for row in mined)  # the clicks became positives
    shown = dict(
        ((sid, doc), rank)
        for sid, rank, doc in service.store.query(
            "SELECT search_id, rank, doc_id FROM impressions WHERE team IS NOT NULL"
        )
    )
    assert all(shown[(row[0], row[2])] == row[6] for row in mined)


def test_users_who_prefer_the_incumbents_results_reject_the_challenger(two_versions: tuple[Service, Any]) -> None:
    outcome, report, _ = run_test(two_versions, prefer="incumbent")
    assert outcome is False and report.online["verdict"] == "incumbent" and report.online["band"][1] < 0.5
    assert "preferred the incumbent" in report.reasons[-1]


def test_without_clicks_the_test_ends_undecided_at_its_search_limit(two_versions: tuple[Service, Any]) -> None:
    outcome, report, users = run_test(two_versions, prefer=None, interleave_max_searches=30)
    assert outcome is False and report.online["verdict"] is None and report.online["searches"] >= 30
    assert "undecided at the searches limit" in report.online["reason"]


def test_an_operator_can_promote_early(two_versions: tuple[Service, Any]) -> None:
    outcome, report, _ = run_test(two_versions, prefer=None, stop="promote")
    assert outcome is True and report.online["reason"] == "an operator ended the online test: promote"


def test_a_shutdown_cancels_the_test(two_versions: tuple[Service, Any]) -> None:
    outcome, report, _ = run_test(two_versions, prefer="challenger", stop="shutdown", interleave_check_seconds=5)
    assert isinstance(outcome, Cancelled) and report.online is None


def test_shadow_mode_promotes_after_its_window_with_how_much_would_change(two_versions: tuple[Service, Any]) -> None:
    outcome, report, users = run_test(two_versions, prefer=None, online_test="shadow", interleave_max_searches=20)
    online = report.online
    assert outcome is True and online["mode"] == "shadow" and online["searches"] >= 20
    assert 0 <= online["top3_changed"] <= 1 and online["top3_changed"] > 0  # v2 ranks visibly differently
    assert 0 <= online["mean_overlap_at_k"] < 1
    assert "promoted on the offline gate" in online["reason"]
    assert users.versions == {"v1"}  # nobody saw the challenger
