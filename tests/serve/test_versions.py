"""Versions that can serve again: rollback puts alias and encoder back (replaying the writes it missed),
pruning drops old collections and weights but keeps meta.json, and only kept versions are rollback targets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flywheel.errors import NotFound
from flywheel.models.encoder import Encoder
from flywheel.models.query_adapter import QueryAdapter
from flywheel.models.registry import ModelVersion
from flywheel.serve.service import Service
from flywheel.serve.versions import kept_versions, prune, rollback
from flywheel.types import Document
from flywheel.util.files import now_iso
from tests.helpers.factories import CORPUS
from tests.helpers.models import add_candidate, promote_candidate

QUERY = "learn python"


def own_answer(service: Service, encoder: Encoder, query: str = QUERY, k: int = 3) -> list[str]:
    """The doc ids a version finds when its own encoder queries its own collection."""
    hits = service.index.search(encoder.encode([query])[0], k, collection=service.index.collection(encoder.version))
    return [h.doc_id for h in hits]


def collection_ids(service: Service, version: str) -> set[str]:
    return {i for ids, _ in service.index.scroll_vectors(version) for i in ids}


@pytest.fixture
def loaded(service: Service) -> Service:
    """The service with the small corpus stored and embedded into v1."""
    service.upsert_documents([Document(i, t) for i, t in CORPUS])
    return service


def test_rollback_returns_to_the_previous_version_with_the_writes_it_missed(
    loaded: Service, tiny_model_path: Path
) -> None:
    service = loaded
    v1 = service.encoder
    v2 = promote_candidate(service, tiny_model_path)
    assert own_answer(service, v1) != own_answer(service, v2), "the candidate must answer visibly differently"
    # Writes while v2 serves go to v2's collection only; the retired v1 collection misses them.
    service.upsert_documents([Document("d9", "How do I bake bread at home?")])
    service.delete_document("d8")
    assert "d9" not in collection_ids(service, "v1") and "d8" in collection_ids(service, "v1")

    back = rollback(service)

    assert (back.version, back.status) == ("v1", "incumbent")
    assert service.registry.get("v2").status == "retired"
    assert service.registry.history()[-1] | {"at": None} == {
        "version": "v1",
        "action": "rollback",
        "previous": "v2",
        "at": None,
    }
    assert service.index.serving_version() == "v1" and service.encoder.version == "v1"
    answer = service.search(QUERY, 3)
    assert answer.model_version == "v1"
    assert [h.doc_id for h in answer.hits] == own_answer(service, v1)
    # The catch-up replayed the upsert and the delete into v1's collection before the switch.
    assert collection_ids(service, "v1") == {i for i, _ in CORPUS if i != "d8"} | {"d9"}
    assert service.search("How do I bake bread at home?", 1).hits[0].doc_id == "d9"

    forward = rollback(service, to="v2")  # a rollback can go forward to a kept version too
    assert forward.version == "v2" and service.encoder.version == "v2"
    assert [h.doc_id for h in service.search(QUERY, 3).hits] == own_answer(service, service.encoder)


def test_rollback_refuses_what_cannot_serve(loaded: Service, tiny_model_path: Path) -> None:
    service = loaded
    with pytest.raises(NotFound, match="v1 has no previous version to roll back to"):
        rollback(service)
    with pytest.raises(NotFound, match="'v9' does not exist"):
        rollback(service, to="v9")
    with pytest.raises(NotFound, match=r"v1 cannot serve \(status incumbent\)"):
        rollback(service, to="v1")
    rejected = add_candidate(service, tiny_model_path)
    service.registry.mark(rejected.version, "rejected")
    with pytest.raises(NotFound, match=r"v2 cannot serve \(status rejected\); versions to roll back to: \[\]"):
        rollback(service, to="v2")
    assert service.index.serving_version() == "v1" and service.registry.incumbent().version == "v1"


def test_prune_keeps_the_incumbent_and_the_newest_others_and_drops_the_rest(
    loaded: Service, tiny_model_path: Path
) -> None:
    service = loaded
    service.settings = service.settings.model_copy(update={"keep_versions": 2})
    for seed in (1, 2, 3):
        promote_candidate(service, tiny_model_path, seed)  # v2, v3, v4 (incumbent)
    models = service.registry.dir
    assert service.index.versions() == ["v1", "v2", "v3", "v4"]

    assert prune(service) == ["v1", "v2"]

    assert service.index.versions() == ["v3", "v4"]
    statuses = {v.version: v.status for v in service.registry.versions()}
    assert statuses == {"v1": "pruned", "v2": "pruned", "v3": "retired", "v4": "incumbent"}
    assert [p.name for p in (models / "v2").iterdir()] == ["meta.json"]  # weights gone, provenance kept
    assert service.registry.get("v2").parent == "v1"
    assert (models / "v3" / "model.safetensors").is_file() and (models / "v4" / "model.safetensors").is_file()
    assert (tiny_model_path / "model.safetensors").is_file()  # a base model's files are never deleted
    assert prune(service) == []

    # Rollback targets: retired versions with weights, and a base model (rebuilt from the store).
    assert kept_versions(service) == ["v1", "v3"]
    with pytest.raises(NotFound, match=r"v2 cannot serve \(status pruned\); versions to roll back to: \['v1', 'v3'\]"):
        rollback(service, to="v2")
    assert rollback(service, to="v1").version == "v1"
    assert service.index.exists("v1") and service.index.count("v1") == len(CORPUS)
    assert service.index.vectors_backend("v1") == "torch"
    answer = service.search(QUERY, 3)
    assert answer.model_version == "v1" and [h.doc_id for h in answer.hits] == own_answer(service, service.encoder)


def test_prune_keeps_an_adapters_base_while_the_adapter_is_kept(loaded: Service, tiny_model_path: Path) -> None:
    service = loaded
    dim = service.encoder.dimension
    rotation, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(dim, dim)))
    adapter = QueryAdapter("v2", "v1", rotation.astype(np.float32), np.zeros(dim, np.float32))
    _, folder = service.registry.allocate()
    adapter.save(folder)
    service.registry.save(ModelVersion("v2", "adapter", "", now_iso(), dim, parent="v1"))
    service.swap(service.encoder, adapter=adapter)
    service.registry.promote("v2")
    promote_candidate(service, tiny_model_path)  # v3, a full model with its own collection

    service.settings = service.settings.model_copy(update={"keep_versions": 2})
    assert prune(service) == []  # v2 is the one other version kept, and it serves on v1's collection
    assert service.index.versions() == ["v1", "v3"]
    assert kept_versions(service) == ["v1", "v2"]
    assert rollback(service, to="v2").version == "v2"
    assert service.adapter is not None and service.adapter.version == "v2"
    assert service.index.serving_version() == "v1" and service.search(QUERY, 3).model_version == "v2"

    service.settings = service.settings.model_copy(update={"keep_versions": 1})
    promote_candidate(service, tiny_model_path, seed=2)  # v4
    assert prune(service) == ["v1", "v2", "v3"]
    assert [p.name for p in (service.registry.dir / "v2").iterdir()] == ["meta.json"]
    assert service.index.versions() == ["v4"]
    assert kept_versions(service) == ["v1"]  # the pruned adapter is gone; its base can be rebuilt
