"""The index contract on both embedded engines (local mode and Qdrant Edge), and what only Edge has to prove:
its pointer file, persistence across reopen, the folder lock, the HNSW build in a child, and kill -9."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe

from flywheel.config import Settings
from flywheel.errors import NotFound, StoreLocked
from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.engine import VectorIndex, open_engine
from flywheel.serve.index import content_hash
from flywheel.types import Document

DOCS = [
    Document(f"d{i}", f"text {i}", {"i": i, "lang": ["en", "de"][i % 2], "kb": {"public": i % 3 == 0}})
    for i in range(12)
]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture(params=["local", "edge"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorIndex]:
    """An empty index on each embedded engine, opened the way the service opens it."""
    opened = open_engine(Settings(data_dir=tmp_path), request.param)
    yield opened
    opened.close()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeIndex]:
    opened = EdgeIndex(tmp_path / "edge", "documents")
    yield opened
    opened.close()


def test_upsert_replace_delete_count_and_scroll(index: VectorIndex) -> None:
    vecs = _vectors(12)
    index.create("v1", 8, backend="onnx")
    index.upsert("v1", DOCS, vecs, batch_size=5)
    index.point_alias("v1")
    assert index.count("v1") == 12 and index.vectors_backend("v1") == "onnx"
    top = index.search(vecs[7], k=3)
    assert top[0].doc_id == "d7" and top[0].metadata == DOCS[7].metadata and top[0].score == pytest.approx(1, abs=1e-5)
    index.upsert("v1", [Document("d7", "changed", {"new": True})], vecs[7:8])
    assert index.count("v1") == 12 and index.search(vecs[7], 1)[0].text == "changed"
    index.delete("v1", ["d7", "never-there"])
    assert index.count("v1") == 11 and index.search(vecs[7], 1)[0].doc_id != "d7"
    batches = list(index.scroll_vectors("v1", batch_size=4))
    assert [len(ids) for ids, _ in batches] == [4, 4, 3]
    ids, matrix = index.all_vectors("v1", 8)
    assert sorted(ids) == sorted(d.id for d in DOCS if d.id != "d7")
    # Stored vectors come back as written (cosine: unit length), so adapter cycles can reuse them.
    for doc_id, row in zip(ids, matrix, strict=True):
        assert np.allclose(row, vecs[int(doc_id[1:])], atol=1e-5)


def test_content_hashes_match_what_was_written(index: VectorIndex) -> None:
    index.create("v1", 8)
    index.upsert("v1", DOCS, _vectors(12), batch_size=5)
    assert index.content_hashes("v1", batch_size=5) == {d.id: content_hash(d.text, d.metadata) for d in DOCS}


@pytest.mark.parametrize(
    ("metadata_filter", "expected"),
    [
        ({"lang": "de"}, {"d1", "d3", "d5", "d7", "d9", "d11"}),
        ({"lang": ["de"], "i": [1, 2, 3]}, {"d1", "d3"}),
        ({"kb.public": True}, {"d0", "d3", "d6", "d9"}),
        ({"kb.public": False, "lang": "en"}, {"d2", "d4", "d8", "d10"}),
        ({"kb.public": [True], "i": 9}, {"d9"}),
        ({"lang": "fr"}, set()),
    ],
)
def test_search_with_a_metadata_filter_returns_only_matching_documents(
    index: VectorIndex, metadata_filter: dict, expected: set[str]
) -> None:
    vecs = _vectors(12)
    index.create("v1", 8)
    index.upsert("v1", DOCS, vecs)
    index.point_alias("v1")
    hits = index.search(vecs[0], k=12, metadata_filter=metadata_filter)
    assert {h.doc_id for h in hits} == expected


@pytest.mark.parametrize("engine", ["local", "edge"])
def test_declared_payload_indexes_follow_the_setting_and_matching_ids_uses_the_search_filter(
    tmp_path: Path, engine: str
) -> None:
    declared = {"lang": "keyword", "kb.public": "bool"}
    index = open_engine(Settings(data_dir=tmp_path, payload_indexes=declared), engine)
    try:
        index.create("v1", 8)
        index.upsert("v1", DOCS, _vectors(12))
        assert index.declared_indexes("v1") == declared
        # Edge builds the payload indexes; local mode keeps none (only the declaration is recorded).
        built = {"metadata.lang": "keyword", "metadata.kb.public": "bool"} if engine == "edge" else {}
        assert index.payload_schema("v1") == built
        assert index.matching_ids("v1", {"kb.public": True, "lang": "en"}) == {"d0", "d6"}
        index.payload_indexes = {"lang": "integer"}  # a changed setting: retyped, the undeclared one dropped
        index.ensure_payload_indexes("v1")
        assert index.declared_indexes("v1") == {"lang": "integer"}
        assert index.payload_schema("v1") == ({"metadata.lang": "integer"} if engine == "edge" else {})
    finally:
        index.close()


def test_alias_switch_versions_and_drop(index: VectorIndex) -> None:
    index.create("v1", 4)
    index.create("v2", 8)
    assert index.create("v2", 8) == index.collection("v2")  # exists: kept as it is
    index.upsert("v1", [Document("a", "old")], _vectors(1, 4))
    index.upsert("v2", [Document("a", "new")], _vectors(1, 8))
    assert index.serving_version() is None
    index.point_alias("v1")
    assert index.serving_version() == "v1" and index.search(_vectors(1, 4)[0], 1)[0].text == "old"
    index.point_alias("v2")
    assert index.serving_version() == "v2" and index.search(_vectors(1, 8)[0], 1)[0].text == "new"
    assert index.search(_vectors(1, 4)[0], 1, collection=index.collection("v1"))[0].text == "old"
    assert index.versions() == ["v1", "v2"] and index.exists("v1")
    index.drop("v1")
    assert index.versions() == ["v2"] and not index.exists("v1") and index.serving_version() == "v2"
    index.create("v2", 8, replace=True)
    assert index.count("v2") == 0


def test_edge_keeps_points_pointer_and_backend_across_reopen(tmp_path: Path) -> None:
    first = EdgeIndex(tmp_path / "edge", "documents")
    first.create("v1", 8, backend="onnx-int8")
    first.upsert("v1", DOCS, _vectors(12))
    first.point_alias("v1")
    first.close()
    again = EdgeIndex(tmp_path / "edge", "documents")
    try:
        assert again.serving_version() == "v1" and again.count("v1") == 12
        assert again.vectors_backend("v1") == "onnx-int8" and again.search(_vectors(12)[4], 1)[0].doc_id == "d4"
    finally:
        again.close()


def test_edge_pointer_and_shards_survive_interrupted_writes(edge: EdgeIndex) -> None:
    edge.create("v1", 8)
    edge.point_alias("v1")
    # A crash while the pointer was being rewritten leaves its temp file: the pointer itself is the old one.
    (edge.root / ".documents.json.tmp").write_text('{"version": "v', encoding="utf-8")
    # A crash in the middle of creating v2 leaves its hidden staging folder, and one of dropping v3 its trash.
    qe.EdgeShard.create(str(edge.root / ".documents__v2.creating-1234abcd"), edge._config(8)).close()
    (edge.root / ".documents__v3.dropping-1234abcd").mkdir()
    assert edge.serving_version() == "v1" and edge.versions() == ["v1"] and not edge.exists("v2")
    assert json.loads((edge.root / "documents.json").read_text())["version"] == "v1"
    edge.create("v2", 8)
    edge.point_alias("v2")
    assert edge.serving_version() == "v2" and edge.versions() == ["v1", "v2"]
    with pytest.raises(NotFound, match="documents__v9"):
        edge.point_alias("v9")
    assert edge.serving_version() == "v2"
    edge.close()
    EdgeIndex(edge.root, "documents").close()  # the next open clears the leftovers
    assert sorted(p.name for p in edge.root.iterdir() if p.name.startswith(".documents__")) == []


def test_dropping_the_serving_shard_unsets_the_pointer(edge: EdgeIndex) -> None:
    edge.create("v1", 8)
    edge.point_alias("v1")
    edge.drop("v1")
    assert edge.serving_version() is None and edge.versions() == []
    with pytest.raises(NotFound, match="points at no collection"):
        edge.search(_vectors(1)[0], 3)


def test_a_second_process_gets_store_locked(tmp_path: Path, edge: EdgeIndex) -> None:
    code = (
        "import sys; from pathlib import Path; from flywheel.errors import StoreLocked\n"
        "from flywheel.serve.edge_index import EdgeIndex\n"
        "try:\n    EdgeIndex(Path(sys.argv[1]), 'documents')\nexcept StoreLocked as e:\n    print('locked:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(edge.root)], capture_output=True, text=True, check=True)
    assert "locked:" in out.stdout and "in use by another process" in out.stdout
    with pytest.raises(StoreLocked):
        EdgeIndex(edge.root, "documents")  # a second index in this process, too


def test_optimize_builds_the_hnsw_graph_in_a_child_and_search_still_finds(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "edge", "documents", hnsw_m=8, hnsw_ef_construct=32, indexing_threshold_kb=1)
    try:
        n = 1500
        vecs = _vectors(n, 16, seed=3)
        index.create("v1", 16)
        index.upsert("v1", [Document(f"p{i}", f"t{i}", {"i": i}) for i in range(n)], vecs, batch_size=500)
        index.point_alias("v1")
        assert not index.optimize("v1", min_unindexed=n + 1)  # not worth a build: nothing ran
        assert index._shard("v1").info().indexed_vectors_count == 0
        assert index.optimize("v1", min_unindexed=100)
        assert index._shard("v1").info().indexed_vectors_count >= n - 100
        assert index.count("v1") == n
        assert [index.search(vecs[i], 1)[0].doc_id for i in (0, 700, 1499)] == ["p0", "p700", "p1499"]
    finally:
        index.close()


def test_kill_9_after_an_upsert_loses_nothing_the_call_returned(tmp_path: Path) -> None:
    """An upsert is in Edge's WAL when it returns: SIGKILL without close or flush keeps it."""
    code = (
        "import os, signal, sys, numpy as np; from pathlib import Path\n"
        "from flywheel.serve.edge_index import EdgeIndex; from flywheel.types import Document\n"
        "ix = EdgeIndex(Path(sys.argv[1]), 'documents'); ix.create('v1', 8); ix.point_alias('v1')\n"
        "v = np.eye(8, dtype=np.float32)\n"
        "ix.upsert('v1', [Document(f'k{i}', 'x') for i in range(8)], v)\n"
        "ix.delete('v1', ['k3'])\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "edge")], capture_output=True, text=True)
    assert done.returncode == -9, done.stderr
    again = EdgeIndex(tmp_path / "edge", "documents")  # the dead process's lock went with it
    try:
        assert again.serving_version() == "v1" and again.count("v1") == 7
        assert again.search(np.eye(8, dtype=np.float32)[5], 1)[0].doc_id == "k5"
    finally:
        again.close()
