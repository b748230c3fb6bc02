"""Adapter cycles through HTTP: promotion, rollback, restart, and a full promotion on top."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from flywheel.formats.pairs import load_labelled_pairs
from flywheel.lab.simulate import UserModel, simulate
from flywheel.models.query_adapter import normalise
from flywheel.scoring.pair_error import compare_scored
from tests.helpers.cycles import simulate_users, wait_for
from tests.helpers.factories import world_documents, world_queries


@pytest.fixture
def adapter_settings(tmp_path: Path, tiny_model_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        base_model=str(tiny_model_path),
        device="cpu",  # cycle_mode "auto" -> adapter
        min_heldout_pairs=10,
        heldout_percent=25,
        keep_versions=2,
        adapter_epochs=100,
        adapter_learning_rate=1e-2,
        # for the full cycle on top (tiny model):
        train_learning_rate=2e-3,
        train_epochs=4,
        train_batch_size=16,
    )


def golden_file(path: Path) -> Path:
    """The user's golden pairs: each world query with one relevant and one unrelated document."""
    queries, relevant = world_queries()
    texts = {d["id"]: d["text"] for d in world_documents()}
    rows = []
    for i, (qid, text) in enumerate(queries.items()):
        other = sorted(set(texts) - relevant[qid])[i % 7]
        rows += [(text, texts[sorted(relevant[qid])[0]], 1), (text, texts[other], 0)]
    path.write_text("".join(json.dumps({"query": q, "document": d, "label": y}) + "\n" for q, d, y in rows))
    return path


@pytest.mark.slow
def test_adapter_promotion_rollback_restart_and_full_on_top(adapter_settings: Settings) -> None:
    settings = adapter_settings
    with TestClient(create_app(settings)) as api:
        api.post("/documents", json={"documents": world_documents()})
        assert simulate_users(api) > 100
        cycle_id = api.post("/cycles").json()["cycle_id"]  # no body: the default mode
        record = wait_for(api, cycle_id)
        report = api.get(f"/reports/{cycle_id}").json()
        assert record["kind"] == "adapter" and report["kind"] == "adapter"
        assert record["state"] == "promoted", report.get("reasons")
        assert report["counts"]["encoded_documents"] == 0 and report["counts"]["encoded_queries"] == 0
        assert report["counts"]["document_vectors_read"] == len(world_documents())
        assert "reembed" not in report["timings"] and {"vectors", "train", "evaluate", "swap"} <= set(report["timings"])
        pair = report["metrics"]["pair_error"]
        assert pair["candidate"]["error_rate"] < pair["incumbent"]["error_rate"]
        assert report["metrics"]["retrieval"]["ndcg@10"]["candidate"] > 0

        service = api.app.state.service
        assert api.get("/healthz").json()["model_version"] == "v2"
        assert api.post("/search", json={"query": "good guitar tips"}).json()["model_version"] == "v2"
        assert service.index.serving_version() == "v1" and service.encoder.version == "v1"  # no re-index
        models = api.get("/models").json()
        assert models["incumbent"]["kind"] == "adapter" and models["incumbent"]["parent"] == "v1"
        assert models["serving"] == "v2" and models["incumbent"]["made_by"]["cycle_id"] == cycle_id
        assert (settings.models_dir / "v2" / "adapter.safetensors").exists()
        assert not service.index.exists("v2")

        assert api.post("/models/rollback", json={}).json() == {"model_version": "v1", "previous": "v2"}
        assert service.adapter is None
        assert api.post("/search", json={"query": "good guitar tips"}).json()["model_version"] == "v1"
        assert api.post("/models/rollback", json={"to": "v2"}).json()["model_version"] == "v2"

    # A restart restores the adapter incumbent on its base collection.
    with TestClient(create_app(settings)) as api:
        service = api.app.state.service
        assert api.get("/healthz").json()["model_version"] == "v2"
        assert service.adapter is not None and service.adapter.version == "v2" and service.encoder.version == "v1"

        # A full cycle on top: a new base, its own collection, no adapter any more.
        # The gate compares against what serves (base + adapter); the tiny model's full fine-tune need not beat it.
        golden = golden_file(settings.data_dir.parent / "golden.jsonl")
        lenient = settings.model_copy(
            update={
                "gate_metric": "pair_error",
                "require_significant": False,
                "min_improvement": 0.0,
                "max_ndcg_drop": 1,
                "golden_pairs": golden,
            }
        )
        service.settings = lenient
        serving_adapter, base_encoder = service.adapter, service.encoder
        cycle_id = api.post("/cycles", json={"mode": "full"}).json()["cycle_id"]
        record = wait_for(api, cycle_id)
        report = api.get(f"/reports/{cycle_id}").json()
        assert record["kind"] == "full" and report["kind"] == "full" and report["incumbent"] == "v2"
        assert record["state"] == "promoted", report.get("reasons")
        # The golden-set guard scores the incumbent as it served (v1 + the v2 adapter), not the bare base.
        pairs = load_labelled_pairs(golden)
        q, d = (normalise(base_encoder.encode([getattr(p, side) for p in pairs])) for side in ("query", "document"))
        labels = np.array([p.label for p in pairs])
        served = compare_scored(pairs, (serving_adapter.apply(q) * d).sum(1), (q * d).sum(1), seed=settings.seed)
        assert served["incumbent"]["error_rate"] != served["candidate"]["error_rate"], "adapter should matter here"
        guard = report["metrics"]["golden"]["incumbent"]
        assert guard["error_rate"] == pytest.approx(served["incumbent"]["error_rate"])
        assert guard["n"] == served["incumbent"]["n"] and 0 < labels.mean() < 1
        assert service.adapter is None and service.encoder.version == "v3"
        assert service.index.serving_version() == "v3"
        assert api.post("/search", json={"query": "good guitar tips"}).json()["model_version"] == "v3"
        assert api.get("/models").json()["incumbent"]["parent"] == "v1"
        # Rollback across kinds: back to the adapter (its base v1 is kept with it), and forward again.
        assert api.post("/models/rollback", json={"to": "v2"}).json() == {"model_version": "v2", "previous": "v3"}
        assert service.index.serving_version() == "v1" and service.adapter.version == "v2"
        assert api.post("/search", json={"query": "good guitar tips"}).json()["model_version"] == "v2"
        assert api.post("/models/rollback", json={"to": "v3"}).json()["model_version"] == "v3"
        assert service.adapter is None and service.index.serving_version() == "v3"

        # Adapters then train on the new base's vectors: searches logged under v3 carry v3 vectors.
        queries, relevant = world_queries()
        some = dict(list(queries.items())[::4])
        simulate(api, some, relevant, UserModel(click_prob=1.0, decay=1.0, wrong_click=0, no_click=0))
        service.settings = settings
        cycle_id = api.post("/cycles", json={"mode": "adapter"}).json()["cycle_id"]
        wait_for(api, cycle_id)
        report = api.get(f"/reports/{cycle_id}").json()
        assert report["base"] == "v3" and report["counts"]["encoded_documents"] == 0
        # Queries asked only under v1 have no v3 vector: encoded (and counted); the others come from the log.
        logged, counts = report["counts"]["logged_query_vectors"], report["counts"]
        assert 0 < logged <= len(some) and counts["encoded_queries"] == counts["query_vectors_needed"] - logged > 0
        assert service.registry.get(report["candidate"]).parent == "v3"
        assert api.post("/cycles", json={"mode": "sideways"}).status_code == 422


def test_an_adapter_cycle_judges_filtered_searches_among_what_their_filter_allowed(
    adapter_settings: Settings,
) -> None:
    queries, _ = world_queries()
    with TestClient(create_app(adapter_settings)) as api:
        api.post("/documents", json={"documents": world_documents()}).raise_for_status()
        for round_ in range(2):
            for qid, text in queries.items():
                topic = qid.split("-")[0]
                body = api.post("/search", json={"query": text, "k": 3, "filter": {"topic": topic}}).json()
                assert {h["metadata"]["topic"] for h in body["hits"]} == {topic}
                event = {"event_id": f"{qid}-{round_}", "search_id": body["search_id"], "type": "click"}
                api.post("/feedback", json={"events": [{**event, "doc_id": body["hits"][1]["doc_id"]}]})
        cycle_id = api.post("/cycles", json={"mode": "adapter"}).json()["cycle_id"]
        assert wait_for(api, cycle_id)["state"] in ("promoted", "rejected")
        report = api.get(f"/reports/{cycle_id}").json()
    next_traffic, unseen = report["metrics"]["next_traffic"], report["metrics"]["retrieval"]
    assert report["counts"]["filtered_searches"] == report["counts"]["searches"]
    # Every held-out search and group was filtered: each ranked only its topic's three documents, so the clicked
    # one is in the top 10 of both models' lists every time (over all 48 documents the tiny model's recall@10
    # is about 0.5).
    assert next_traffic["filtered_queries"] == next_traffic["n_queries"] > 0
    assert unseen["filtered_queries"] == unseen["n_queries"] > 0
    for view in (next_traffic, unseen):
        assert view["recall@10"]["incumbent"] == view["recall@10"]["candidate"] == 1.0


def test_the_memory_weighs_each_document_by_its_clicks(tmp_path: Path) -> None:
    """One misclick must not pull a repeated question as far as the document thirty users chose."""
    from flywheel.cycle.adapter import CachedVectors, train_learner, training_arrays
    from flywheel.cycle.mining import Pair

    rng = np.random.default_rng(0)
    docs = normalise(rng.normal(size=(3, 16)).astype(np.float32))
    query = normalise((docs[0] * 0.1 + docs[1] * 0.1 + docs[2] + 0.05)[None])[0]
    cache = CachedVectors("v1", {"q": query}, ["chosen", "misclicked", "other"], docs)
    cache.doc_row = {d: i for i, d in enumerate(cache.doc_ids)}
    rows = [
        Pair("q", "q", "chosen", "", 1, 30, 2, 40, click_rank=2.0),
        Pair("q", "q", "misclicked", "", 1, 1, 0, 1, click_rank=1.0),
        Pair("q", "q", "other", "", 0, 0, 12, 40),
    ]
    arrays = training_arrays(rows, cache)
    assert arrays.votes.tolist() == [30, 1, 12]
    settings = Settings(data_dir=tmp_path, adapter_learner="memory")
    memory = train_learner(arrays, cache, settings, "v2")[0].memory
    shift = memory.shifts[0]
    expected = (30 * docs[0] + docs[1]) / 31 - 0.25 * docs[2]
    np.testing.assert_allclose(shift, expected, rtol=1e-5, atol=1e-6)
