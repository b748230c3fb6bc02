"""The steps both kinds of cycle share, one at a time on a real data dir with the tiny model: the report
skeleton, stage timing, mining and splitting, the gate, the ONNX step, settling a decision or a failure."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from flywheel.config import Settings
from flywheel.cycle.mining import Pair
from flywheel.cycle.report.model import CycleReport, Metrics
from flywheel.cycle.split import is_heldout
from flywheel.cycle.steps import (
    export_and_guard,
    finish_report,
    gate,
    mine_and_split,
    new_report,
    settle_decision,
    settle_failure,
    split_counts,
    stage_timer,
    torch_reference,
)
from flywheel.errors import InvalidInput
from flywheel.models import export
from flywheel.models.export import ONNX_DIR
from flywheel.serve.service import Service
from flywheel.types import Check, Document, Event, Impression
from tests.helpers.factories import TOPICS, world_documents
from tests.helpers.models import add_candidate, embed_candidate

METRICS = {
    "pair_error": {"incumbent": {"error_rate": 0.22}, "candidate": {"error_rate": 0.18}},
    "retrieval": {"candidate": {"ndcg@10": 0.66}},
}


def _report(cycle_id: str, service: Service | None = None, **fields: object) -> CycleReport:
    """A report skeleton (from what serves, given a service) with some fields already filled in."""
    if service is None:
        return CycleReport(cycle_id=cycle_id, created_at="2026-12-02T00:00:00+00:00", kind="full", **fields)
    return new_report(service, cycle_id, "full").model_copy(update=fields)


def _pair(group: str, doc_id: str, label: int) -> Pair:
    return Pair(group, group, doc_id, f"text of {doc_id}", label, label, 1 - label, 1)


@pytest.fixture
def loaded(service: Service) -> Service:
    """The service with the topic world's documents stored and embedded."""
    service.upsert_documents([Document(d["id"], d["text"], d["metadata"]) for d in world_documents()])
    return service


def test_new_report_starts_from_what_serves(service: Service) -> None:
    report = new_report(service, "c-1", "adapter", base="v1").to_json()
    created = datetime.fromisoformat(report.pop("created_at"))
    assert created.utcoffset().total_seconds() == 0
    assert report == {
        "cycle_id": "c-1",
        "kind": "adapter",
        "incumbent": "v1",
        "base": "v1",
        "candidate": None,
        "serving_after": "v1",
        "decision": None,
        "reasons": [],
        "checks": [],
        "window": None,
        "counts": {},
        "metrics": {"pair_error": None, "golden": None, "retrieval": None, "next_traffic": None},
        "examples": [],
        "training": None,
        "onnx": None,
        "online": None,
        "timings": {},
        "duration_s": None,
        "error": None,
    }
    assert "base" not in new_report(service, "c-2", "full").to_json()  # only adapter cycles sit on a base


def test_stage_timer_announces_a_stage_and_records_it_when_done() -> None:
    timings: dict[str, float] = {}
    announced: list[str] = []
    timed = stage_timer(timings, announced.append)
    done = timed("mine")
    assert announced == ["mine"] and timings == {}  # announced at the start, recorded only at the end
    done()
    timed("train")()
    assert announced == ["mine", "train"] and list(timings) == ["mine", "train"]
    assert all(0 <= t < 5 and t == round(t, 3) for t in timings.values())


def test_gate_adds_the_time_budget_and_writes_checks_and_reasons_into_the_report() -> None:
    settings = Settings(max_cycle_minutes=1)
    report = _report("c-gate")
    decision = gate(report, [Check("error_rate_improvement", True, "better")], time.monotonic() - 120, settings)
    assert not decision.promote
    assert [c["name"] for c in report.checks] == ["error_rate_improvement", "time_budget"]
    assert report.checks[1]["passed"] is False
    assert report.reasons == ["cycle took 2.0 min of a 1 min budget"]  # only what failed

    in_time = gate(_report("c-gate2"), [Check("error_rate_improvement", True, "better")], time.monotonic(), settings)
    assert in_time.promote and in_time.reasons == ["better", "cycle took 0.0 min of a 1 min budget"]


def test_split_counts_adds_the_split_to_the_mined_counts_and_refuses_nothing_to_train() -> None:
    train = [_pair("how to cook", "a", 1), _pair("how to cook", "b", 0)]
    heldout = [_pair("fix my car", "c", 1), _pair("fix my car", "d", 0), _pair("visit paris", "e", 1)]
    counts = split_counts({"pairs": 5, "queries": 3}, train, heldout, n_examples=1)
    assert counts == {
        "pairs": 5,
        "queries": 3,
        "train_pairs": 2,
        "heldout_pairs": 3,
        "heldout_queries": 2,
        "train_examples": 1,
    }
    with pytest.raises(InvalidInput, match="no training example: no training-side query has a clicked document"):
        split_counts({"pairs": 5}, train, heldout, n_examples=0)


def test_mine_and_split_records_the_window_and_keeps_each_query_group_on_one_side(loaded: Service) -> None:
    service = loaded
    service.settings = service.settings.model_copy(update={"heldout_percent": 50, "next_traffic_percent": 0})
    for n, topic in enumerate(TOPICS):
        query = f"good {topic} tips"
        service.store.log_search(f"s{n}", query, 2, "v1", [Impression(1, f"{topic}-0", 0.9), Impression(2, "x", 0.1)])
        service.store.add_events([Event(f"e{n}", f"s{n}", f"{topic}-0", "click")])
    report = _report("c-mine")
    mined, train, heldout = mine_and_split(service, service.encoder, report)
    assert report.window.model_dump() == {
        "start": None,
        "end": mined.window_end.isoformat(),
        "next_traffic_start": None,
    }
    assert len(mined.pairs) == len(TOPICS) and all(p.label == 1 for p in mined.pairs)
    assert sorted(p.group for p in train + heldout) == sorted(p.group for p in mined.pairs)
    service.settings = service.settings.model_copy(update={"next_traffic_percent": 25})
    mined, _, _ = mine_and_split(service, service.encoder, report)  # retention keeps this window and later
    assert mined.next_traffic_start is not None
    assert report.window.next_traffic_start == mined.next_traffic_start.isoformat()
    assert train and heldout, "16 query groups at 50% land on both sides"
    assert all(is_heldout(p.group, 50) for p in heldout) and not any(is_heldout(p.group, 50) for p in train)


def test_settle_decision_promotes_the_candidate_records_it_and_prunes(loaded: Service, tiny_model_path: Path) -> None:
    service = loaded
    service.settings = service.settings.model_copy(update={"keep_versions": 1})
    candidate = embed_candidate(service, tiny_model_path)
    report = _report("c-promote", candidate="v2", metrics=Metrics(**METRICS), service=service)
    timings: dict[str, float] = {}
    stages: list[str] = []

    settle_decision(service, report, "v2", True, stage_timer(timings, stages.append), lambda: service.swap(candidate))

    assert (report.decision, report.serving_after) == ("promoted", "v2")
    assert stages == ["swap"] and list(timings) == ["swap"]
    entry = service.registry.incumbent()
    assert entry.version == "v2" and entry.metrics == {
        "cycle_id": "c-promote",
        "error_rate": 0.18,
        "incumbent_error_rate": 0.22,
        "ndcg@10": 0.66,
    }
    assert service.search("good guitar tips", 3).model_version == "v2"
    # keep_versions=1: the old base's collection is pruned; the base itself can be rebuilt later.
    assert service.index.versions() == ["v2"] and service.registry.get("v1").status == "pruned"


def test_settle_decision_rejects_without_swapping_and_drops_the_candidate(
    loaded: Service, tiny_model_path: Path
) -> None:
    service = loaded
    embed_candidate(service, tiny_model_path)
    report = _report("c-reject", candidate="v2", metrics=Metrics(**METRICS), service=service)
    swaps: list[str] = []

    settle_decision(service, report, "v2", False, stage_timer({}, lambda _: None), lambda: swaps.append("swap"))

    assert report.decision == "rejected" and report.serving_after == "v1" and swaps == []
    entry = service.registry.get("v2")
    assert entry.status == "rejected" and entry.metrics["error_rate"] == 0.18
    assert [p.name for p in entry.path.iterdir()] == ["meta.json"]
    assert service.index.versions() == ["v1"] and service.registry.incumbent().version == "v1"


def test_settle_failure_discards_a_candidate_that_does_not_serve(loaded: Service, tiny_model_path: Path) -> None:
    service = loaded
    embed_candidate(service, tiny_model_path)
    report = _report("c-fail", candidate="v2", service=service)
    try:
        raise RuntimeError("qdrant went away")
    except RuntimeError as exc:
        settle_failure(service, report, exc)
    assert report.decision == "failed" and report.reasons == ["qdrant went away"]
    assert report.error.startswith("qdrant went away\nTraceback") and "RuntimeError" in report.error
    entry = service.registry.get("v2")
    assert entry.status == "failed" and entry.metrics == {"error": "qdrant went away"}
    assert [p.name for p in entry.path.iterdir()] == ["meta.json"] and service.index.versions() == ["v1"]

    # Bad input (nothing to train on) is a rejection with the message alone, no traceback.
    nothing = new_report(service, "c-empty", "full")
    settle_failure(service, nothing, InvalidInput("no training example"))
    assert (nothing.decision, nothing.error, nothing.reasons) == (
        "rejected",
        "no training example",
        ["no training example"],
    )


def test_settle_failure_keeps_a_candidate_that_already_serves(loaded: Service, tiny_model_path: Path) -> None:
    service = loaded
    candidate = embed_candidate(service, tiny_model_path)
    report = _report("c-late", candidate="v2", service=service)
    service.swap(candidate)  # the failure came after the switch, before the registry followed

    settle_failure(service, report, RuntimeError("report writer crashed"))

    assert (report.decision, report.serving_after) == ("promoted", "v2")
    assert service.registry.incumbent().version == "v2"  # so a restart keeps serving it
    assert (service.registry.dir / "v2" / "model.safetensors").is_file()


def test_finish_report_writes_json_and_html(service: Service) -> None:
    report = _report("c-done", decision="rejected", reasons=["too few pairs"], service=service)
    done = finish_report(service, report, {"mine": 0.25}, time.monotonic())
    folder = service.settings.reports_dir / "c-done"
    assert json.loads((folder / "report.json").read_text()) == done.to_json()
    assert done.timings == {"mine": 0.25} and 0 <= done.duration_s < 5
    page = (folder / "report.html").read_text()
    assert "<code>c-done</code>" in page and "<li>too few pairs</li>" in page


def test_torch_reference_is_the_incumbent_on_torch_and_a_torch_copy_of_an_onnx_one(
    tmp_path: Path, tiny_model_path: Path, guard_file: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "d", base_model=str(tiny_model_path), guard_pairs=guard_file)
    service = Service.open(settings)
    try:
        assert torch_reference(service, service.encoder) is service.encoder
        onnx = service.load_encoder(service.registry.get("v1"), backend="onnx")
        reference = torch_reference(service, onnx)
        assert (reference.version, reference.backend) == ("v1", "torch")
        texts = ["good guitar tips", "how do i learn python"]
        np.testing.assert_allclose(reference.encode(texts), onnx.encode(texts), atol=1e-5)
    finally:
        service.close()


def test_export_and_guard_exports_nothing_when_torch_serves_and_no_export_is_asked(
    loaded: Service, tiny_model_path: Path
) -> None:
    service = loaded
    service.settings = service.settings.model_copy(update={"export_on_promote": False})
    entry = add_candidate(service, tiny_model_path)
    trained = service.load_encoder(entry)
    report = _report("c-export")

    query, bulk, check = export_and_guard(service, entry, [], report, torch_encoder=trained)

    assert query is trained and bulk is trained  # the encoder training left is reused, not reloaded
    assert check == Check("encoder_backend", True, "no ONNX export; query encoder torch, corpus encoder torch")
    assert report.onnx == {
        "requested": {"query": "torch", "bulk": "torch"},
        "serving": {"query": "torch", "bulk": "torch"},
    }
    assert not (entry.path / ONNX_DIR).exists()


def test_a_failed_export_is_fatal_only_when_a_backend_needs_onnx(
    loaded: Service, tiny_model_path: Path, tmp_path: Path
) -> None:
    service = loaded
    one_label = tmp_path / "positives.jsonl"  # no threshold can be fitted on these: the guard cannot measure
    one_label.write_text(
        "".join(json.dumps({"query": f"q{i}", "document": f"d{i}", "label": 1}) + "\n" for i in range(40))
    )
    service.settings = service.settings.model_copy(update={"guard_pairs": one_label})
    entry = add_candidate(service, tiny_model_path)
    report = _report("c-export")

    query, bulk, check = export_and_guard(service, entry, [], report)  # torch serves: the cycle goes on

    assert (query.backend, bulk.backend) == ("torch", "torch") and check.passed
    error = report.onnx["error"]
    assert "only one class" in error
    assert check.detail == f"ONNX export failed: {error}; query encoder torch, corpus encoder torch"
    assert "guard" not in report.onnx

    service.settings = service.settings.model_copy(update={"encoder_backend": "onnx"})
    with pytest.raises(InvalidInput, match=re.escape(error)):
        export_and_guard(service, entry, [], _report("c-export2"))


def test_on_auto_a_candidate_that_does_not_export_serves_with_torch_and_is_not_exported_again(
    loaded: Service, tiny_model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = loaded
    service.settings = service.settings.model_copy(update={"encoder_backend": "auto"})
    entry = add_candidate(service, tiny_model_path)

    def untraceable(*args: object, **kwargs: object) -> dict:
        raise RuntimeError("an op the exporter does not know")

    monkeypatch.setattr(export, "export_model", untraceable)
    report = _report("c-auto")
    query, bulk, check = export_and_guard(service, entry, [], report)

    assert (query.backend, bulk.backend) == ("torch", "torch") and check.passed
    assert "an op the exporter does not know" in report.onnx["error"]
    assert "an op the exporter does not know" in export.failed_export(service.registry, entry)["error"]
