"""The Qdrant index in local mode: stable point ids, per-version collections, atomic alias switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from flywheel.config import Settings
from flywheel.errors import StoreLocked
from flywheel.serve.index import Index, open_qdrant, point_id
from flywheel.types import Document


@pytest.fixture
def index(tmp_path: Path) -> Index:
    client = QdrantClient(path=str(tmp_path / "q"))
    yield Index(client, "documents")
    client.close()


def _vectors(n: int, dim: int = 4, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_point_id_is_stable_and_distinct() -> None:
    assert point_id("doc-1") == point_id("doc-1")
    assert point_id("doc-1") != point_id("doc-2")
    assert len({point_id(str(i)) for i in range(1000)}) == 1000


def test_upsert_search_count_delete(index: Index) -> None:
    docs = [Document(f"d{i}", f"text {i}", {"i": i}) for i in range(10)]
    vecs = _vectors(10)
    index.create("v1", 4)
    index.upsert("v1", docs, vecs, batch_size=3)
    index.point_alias("v1")
    assert index.count("v1") == 10
    hits = index.search(vecs[7], k=3)
    assert hits[0].doc_id == "d7" and hits[0].metadata == {"i": 7} and hits[0].score == pytest.approx(1.0, abs=1e-5)
    index.upsert("v1", [Document("d7", "changed")], vecs[7:8])
    assert index.count("v1") == 10 and index.search(vecs[7], 1)[0].text == "changed"
    index.delete("v1", ["d7", "unknown"])
    assert index.count("v1") == 9 and index.search(vecs[7], 1)[0].doc_id != "d7"
    ids = [i for batch, _ in index.scroll_vectors("v1", batch_size=4) for i in batch]
    assert sorted(ids) == sorted(f"d{i}" for i in range(10) if i != 7)


def test_alias_switch_between_versions(index: Index) -> None:
    index.create("v1", 4)
    index.create("v2", 8)
    index.upsert("v1", [Document("a", "old")], _vectors(1, 4))
    index.upsert("v2", [Document("a", "new")], _vectors(1, 8))
    assert index.serving_version() is None
    index.point_alias("v1")
    assert index.serving_version() == "v1"
    assert index.search(_vectors(1, 4)[0], 1)[0].text == "old"
    index.point_alias("v2")
    assert index.serving_version() == "v2"
    assert index.search(_vectors(1, 8)[0], 1)[0].text == "new"
    assert index.versions() == ["v1", "v2"]
    index.drop("v1")
    assert index.versions() == ["v2"]


def test_second_local_client_gets_store_locked(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = open_qdrant(settings)
    try:
        with pytest.raises(StoreLocked):
            open_qdrant(settings)
    finally:
        first.close()


def test_declared_payload_indexes_are_kept_on_each_collection_and_follow_the_setting(tmp_path: Path) -> None:
    client = QdrantClient(path=str(tmp_path / "q"))
    try:
        index = Index(client, "documents", payload_indexes={"tenant": "keyword", "kb.public": "bool"})
        index.create("v1", 4)
        assert index.declared_indexes("v1") == {"tenant": "keyword", "kb.public": "bool"}
        assert index.payload_schema("v1") == {}  # local mode keeps no payload indexes of its own
        docs = [
            Document(f"d{i}", "t", {"tenant": ["acme", "globex"][i % 2], "kb": {"public": i < 2}}) for i in range(4)
        ]
        index.upsert("v1", docs, _vectors(4))
        assert index.matching_ids("v1", {"tenant": "acme"}) == {"d0", "d2"}
        assert index.matching_ids("v1", {"tenant": ["acme", "globex"], "kb.public": True}) == {"d0", "d1"}
        # A later start under other settings: the changed type is re-declared, the key no longer listed goes.
        later = Index(client, "documents", payload_indexes={"tenant": "integer"})
        later.ensure_payload_indexes("v1")
        assert later.declared_indexes("v1") == {"tenant": "integer"}
        Index(client, "documents").ensure_payload_indexes("v1")
        assert later.declared_indexes("v1") == {}
        assert later.vectors_backend("v1") is None  # the record sits beside the other metadata, not over it
    finally:
        client.close()
