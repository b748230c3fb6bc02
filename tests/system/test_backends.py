"""Serving, promotion and rollback with each encoder backend (torch, onnx, onnx-int8) through HTTP.

The invariant under test: a collection only ever holds vectors of the precision its queries are encoded
with; changing the backend of a data dir rebuilds the collection instead of mixing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.cycle.report.model import CycleReport
from flywheel.cycle.steps import export_and_guard
from flywheel.models import export as export_module
from flywheel.models.encoder import compatible
from flywheel.serve.service import Service
from tests.helpers.cycles import simulate_users, wait_for
from tests.helpers.factories import world_documents, world_pairs
from tests.helpers.models import add_candidate
from tests.helpers.onnx import break_int8

QUERY = "good guitar tips"


def stored_vs_encoded(service: Service, version: str) -> float:
    """Max difference between a collection's stored vectors and what the serving encoder makes of the texts."""
    texts = {d.id: d.text for batch in service.store.iter_documents() for d in batch}
    worst = 0.0
    for ids, vectors in service.index.scroll_vectors(version):
        encoded = service.encoder.encode([texts[i] for i in ids])
        worst = max(worst, float(np.abs(vectors - encoded).max()))
    return worst


def test_each_backend_serves_and_a_precision_change_rebuilds(
    tmp_path: Path, tiny_model_path: Path, guard_file: Path
) -> None:
    data = tmp_path / "data"
    answers = {}
    made_by = {}
    for step, backend in enumerate(["torch", "onnx", "onnx-int8", "torch"]):
        settings = Settings(
            data_dir=data, base_model=str(tiny_model_path), encoder_backend=backend, guard_pairs=guard_file
        )
        with TestClient(create_app(settings)) as api:
            if step == 0:
                assert api.post("/documents", json={"documents": world_documents()}).status_code == 200
            health = api.get("/healthz").json()
            assert health["encoder_backend"] == backend and health["documents"] == len(world_documents())
            body = api.post("/search", json={"query": QUERY, "k": 5}).json()
            answers[step] = [(h["doc_id"], h["score"]) for h in body["hits"]]
            service = api.app.state.service
            made_by[step] = service.index.vectors_backend("v1")
            assert compatible(made_by[step], backend)
            # Every stored vector is what today's query encoder makes (fp32 within float noise).
            assert stored_vs_encoded(service, "v1") < 1e-4
    assert made_by == {0: "torch", 1: "torch", 2: "onnx-int8", 3: "torch"}  # fp32 kept, int8 rebuilt, and back
    assert [d for d, _ in answers[1]] == [d for d, _ in answers[0]]
    np.testing.assert_allclose([s for _, s in answers[1]], [s for _, s in answers[0]], atol=1e-4)
    np.testing.assert_allclose([s for _, s in answers[2]], [s for _, s in answers[0]], atol=0.05)
    assert answers[3] == answers[0] or np.allclose([s for _, s in answers[3]], [s for _, s in answers[0]], atol=1e-5)


@pytest.mark.parametrize(("query_backend", "bulk_backend"), [("onnx", None), ("torch", "onnx"), ("onnx-int8", None)])
def test_promotion_and_rollback_with_each_backend(
    tmp_path: Path, tiny_model_path: Path, guard_file: Path, query_backend: str, bulk_backend: str | None
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        encoder_backend=query_backend,
        bulk_encoder_backend=bulk_backend,
        guard_pairs=guard_file,
    )
    service = Service.open(settings)
    try:
        with TestClient(create_app(settings, service=service)) as api:
            api.post("/documents", json={"documents": world_documents()})
            candidate = add_candidate(service, tiny_model_path)
            report = CycleReport(cycle_id="c-backends", created_at="2026-12-02T00:00:00+00:00", kind="full")
            query, bulk, check = export_and_guard(service, candidate, world_pairs(), report)
            assert (query.backend, bulk.backend) == (query_backend, bulk_backend or query_backend)
            assert report.onnx["guard"]["data"] == "cycle held-out pairs" and check.passed
            assert query.backend in check.detail
            # What run_cycle does after the gate: re-embed with the bulk encoder, switch, record.
            service.index.create("v2", query.dimension, replace=True, backend=bulk.backend)
            service.embed_into("v2", bulk, [d for b in service.store.iter_documents() for d in b])
            service.swap(query)
            service.registry.promote("v2")

            after = api.post("/search", json={"query": QUERY, "k": 3}).json()
            assert after["model_version"] == "v2"
            assert api.get("/healthz").json()["encoder_backend"] == query_backend
            assert stored_vs_encoded(service, "v2") < (0.05 if query_backend == "onnx-int8" else 1e-4)

            assert api.post("/models/rollback", json={}).json() == {"model_version": "v1", "previous": "v2"}
            before = api.post("/search", json={"query": QUERY, "k": 3}).json()
            assert before["model_version"] == "v1"
            assert [h["score"] for h in before["hits"]] != pytest.approx([h["score"] for h in after["hits"]], abs=1e-3)
            assert api.get("/healthz").json()["encoder_backend"] == query_backend
            assert api.post("/models/rollback", json={"to": "v2"}).json()["model_version"] == "v2"
            again = api.post("/search", json={"query": QUERY, "k": 3}).json()["hits"]
            assert [h["doc_id"] for h in again] == [h["doc_id"] for h in after["hits"]]
            np.testing.assert_allclose([h["score"] for h in again], [h["score"] for h in after["hits"]], atol=1e-5)
    finally:
        service.close()


@pytest.mark.slow
def test_cycle_with_int8_falls_back_when_the_quantizer_breaks(
    tmp_path: Path, tiny_model_path: Path, guard_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole cycle with FLYWHEEL_ENCODER_BACKEND=onnx-int8 whose candidate's int8 graph is broken: the
    candidate is promoted on fp32 ONNX, and the report and the gate's checks say why."""
    quantize = export_module._quantize

    def broken_for_v2(fp32: Path, int8: Path) -> None:
        quantize(fp32, int8)
        if "v2" in str(int8.parent.parent):  # the base keeps a faithful int8 graph
            break_int8(int8)

    monkeypatch.setattr(export_module, "_quantize", broken_for_v2)
    settings = Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        encoder_backend="onnx-int8",
        cycle_mode="full",  # the export and the int8 guard run where a full cycle promotes
        guard_pairs=guard_file,
        train_learning_rate=2e-3,
        train_epochs=2,
        train_batch_size=16,
        min_heldout_pairs=10,
        heldout_percent=25,
        min_improvement=0.0,
        require_significant=False,
        max_ndcg_drop=1.0,
    )
    with TestClient(create_app(settings)) as api:
        assert api.get("/healthz").json()["encoder_backend"] == "onnx-int8"
        api.post("/documents", json={"documents": world_documents()})
        simulate_users(api)
        record = wait_for(api, api.post("/cycles").json()["cycle_id"])
        report = api.get(f"/reports/{record['cycle_id']}").json()
        assert record["state"] == "promoted", report.get("reasons")
        guard = report["onnx"]["guard"]
        assert not guard["passed"] and guard["data"] == "cycle held-out pairs"
        assert report["onnx"]["serving"] == {"query": "onnx", "bulk": "onnx"}
        assert any("int8 refused by the accuracy guard" in r for r in report["reasons"])
        assert "export" in report["timings"]
        health = api.get("/healthz").json()
        assert (health["model_version"], health["encoder_backend"]) == ("v2", "onnx")
        assert api.app.state.service.index.vectors_backend("v2") == "onnx"
        assert api.post("/models/rollback", json={}).json()["model_version"] == "v1"
        assert api.get("/healthz").json()["encoder_backend"] == "onnx-int8"


@pytest.mark.slow
def test_adapter_cycle_promotes_and_rolls_back_on_int8(tmp_path: Path, tiny_model_path: Path, guard_file: Path) -> None:
    """An adapter serves on an int8 collection: it trains on the int8 query and document vectors the loop
    logged, switches only the query transform, and rolls back; the collection is never rebuilt."""
    settings = Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        encoder_backend="onnx-int8",
        int8_max_error_increase=1.0,  # this test is about adapters on int8 vectors, not about the guard
        int8_min_cosine=0.0,
        guard_pairs=guard_file,
        cycle_mode="adapter",
        min_heldout_pairs=10,
        heldout_percent=25,
        adapter_epochs=100,
        adapter_learning_rate=1e-2,
    )
    with TestClient(create_app(settings)) as api:
        service = api.app.state.service
        assert api.get("/healthz").json()["encoder_backend"] == "onnx-int8"
        api.post("/documents", json={"documents": world_documents()})
        assert simulate_users(api) > 100
        record = wait_for(api, api.post("/cycles").json()["cycle_id"])
        report = api.get(f"/reports/{record['cycle_id']}").json()
        assert record["state"] == "promoted", report.get("reasons")
        assert report["kind"] == "adapter" and report["counts"]["encoded_documents"] == 0
        answer = api.post("/search", json={"query": QUERY, "k": 3}).json()
        assert answer["model_version"] == "v2" and service.index.serving_version() == "v1"
        assert service.index.vectors_backend("v1") == "onnx-int8" and service.encoder.backend == "onnx-int8"
        assert stored_vs_encoded(service, "v1") < 0.05  # still the int8 vectors the queries are encoded with
        assert api.post("/models/rollback", json={}).json() == {"model_version": "v1", "previous": "v2"}
        assert api.post("/search", json={"query": QUERY, "k": 3}).json()["model_version"] == "v1"
