"""The engine a data dir records, the mismatch error, the Service on Qdrant Edge (search, swap, restart) and
`flywheel migrate-engine` both ways without re-encoding."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flywheel.cli import app
from flywheel.config import Settings
from flywheel.errors import ConfigError, InvalidInput
from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.engine import DEFAULT_ENGINE, RECORD_FILE, edge_dir, migrate_engine, recorded_engine
from flywheel.serve.index import Index
from flywheel.serve.service import Service
from flywheel.types import Document
from tests.helpers.factories import CORPUS
from tests.helpers.models import promote_candidate

DOCS = [Document(i, t, {"n": n, "even": n % 2 == 0}) for n, (i, t) in enumerate(CORPUS)]
runner = CliRunner()


def _with(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update=changes)


def test_a_new_data_dir_records_the_default_engine_and_keeps_it(settings: Settings) -> None:
    svc = Service.open(settings)
    svc.close()
    assert recorded_engine(settings) == DEFAULT_ENGINE == "edge"
    assert json.loads((settings.data_dir / RECORD_FILE).read_text())["engine"] == "edge"
    again = Service.open(_with(settings, qdrant_engine="edge"))  # the same engine, named: fine
    try:
        assert isinstance(again.index, EdgeIndex) and not settings.qdrant_dir.exists()
    finally:
        again.close()


def test_a_data_dir_made_by_local_mode_before_records_keeps_local_mode(settings: Settings) -> None:
    svc = Service.open(_with(settings, qdrant_engine="local"))
    svc.upsert_documents(DOCS)
    svc.close()
    (settings.data_dir / RECORD_FILE).unlink()  # as a data dir from before engines were recorded
    again = Service.open(settings)
    try:
        assert isinstance(again.index, Index) and recorded_engine(settings) == "local"
        assert again.search("learn python", 2).hits[0].doc_id in {"d1", "d2"}
    finally:
        again.close()


def test_a_setting_that_names_the_other_engine_is_a_config_error(settings: Settings) -> None:
    Service.open(_with(settings, qdrant_engine="local")).close()
    with pytest.raises(ConfigError) as caught:
        Service.open(_with(settings, qdrant_engine="edge"))
    message = str(caught.value)
    assert "'edge'" in message and "'local'" in message and "flywheel migrate-engine --to edge" in message
    Service.open(settings).close()  # the data dir is not left locked or half-open by the refusal


def test_search_swap_and_restart_on_edge(settings: Settings, tiny_model_path: Path) -> None:
    edge_settings = _with(settings, qdrant_engine="edge")
    svc = Service.open(edge_settings)
    try:
        svc.upsert_documents(DOCS)
        before = svc.search("how to learn python", 3, metadata_filter={"even": True})
        assert before.model_version == "v1" and {h.doc_id for h in before.hits} <= {"d1", "d3", "d5", "d7"}
        encoder = promote_candidate(svc, tiny_model_path)
        after = svc.search("how to learn python", 3)
        expected = svc.index.search(encoder.encode(["how to learn python"])[0], 3, collection="documents__v2")
        assert after.model_version == "v2" and [h.doc_id for h in after.hits] == [h.doc_id for h in expected]
        svc.delete_document("d8")
    finally:
        svc.close()
    assert json.loads((edge_dir(settings) / "documents.json").read_text())["version"] == "v2"
    again = Service.open(edge_settings)
    try:
        assert again.index.serving_version() == "v2" and again.search("learn python", 3).model_version == "v2"
        assert again.index.count("v2") == len(DOCS) - 1 and again.index.versions() == ["v1", "v2"]
    finally:
        again.close()


def test_migrate_engine_both_ways_copies_vectors_without_re_encoding(
    settings: Settings, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    local = _with(settings, qdrant_engine="local")
    svc = Service.open(local)
    svc.upsert_documents(DOCS)
    promote_candidate(svc, tiny_model_path)
    expected = [h.doc_id for h in svc.search("lose weight", 4).hits]
    vectors = dict(zip(*svc.index.all_vectors("v2", svc.encoder.dimension), strict=True))
    svc.close()

    result = runner.invoke(app, ["migrate-engine", "--to", "edge", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 0, result.output
    assert "v1: 8 points copied" in result.output and "from local to edge, serving v2" in result.output
    assert recorded_engine(settings) == "edge" and not settings.qdrant_dir.exists()
    with caplog.at_level(logging.WARNING, logger="flywheel.serve"):
        moved = Service.open(settings)
    try:
        assert not [r for r in caplog.records if "repairing" in r.getMessage()]  # nothing to re-embed
        assert isinstance(moved.index, EdgeIndex) and moved.index.serving_version() == "v2"
        assert [h.doc_id for h in moved.search("lose weight", 4).hits] == expected
        ids, matrix = moved.index.all_vectors("v2", moved.encoder.dimension)
        assert all(abs(float(matrix[i] @ vectors[d]) - 1) < 1e-5 for i, d in enumerate(ids))
    finally:
        moved.close()

    back = migrate_engine(settings, "local")
    assert back.copied == {"v1": 8, "v2": 8} and back.serving == "v2" and not edge_dir(settings).exists()
    again = Service.open(local)
    try:
        assert isinstance(again.index, Index) and [h.doc_id for h in again.search("lose weight", 4).hits] == expected
    finally:
        again.close()


def test_migrate_leaves_a_changed_point_to_repair_and_refuses_what_it_cannot_do(settings: Settings) -> None:
    svc = Service.open(_with(settings, qdrant_engine="local"))
    svc.upsert_documents(DOCS)
    # A crash between the Qdrant write and the DuckDB commit of a replace: the point holds text DuckDB lacks.
    svc.index.upsert("v1", [Document("d3", "uncommitted text")], svc.encoder.encode(["uncommitted text"]))
    with pytest.raises(InvalidInput, match="already uses 'local'"):
        migrate_engine(settings, "local")
    result = runner.invoke(app, ["migrate-engine", "--to", "edge", "--data-dir", str(settings.data_dir)])
    assert result.exit_code == 3 and "in use" in result.output  # the server (here: svc) holds the data dir
    svc.close()
    moved = migrate_engine(settings, "edge")
    assert moved.copied == {"v1": 7} and moved.left_to_repair == {"v1": 1}
    again = Service.open(settings)  # start-up repair embeds d3 from DuckDB
    try:
        assert again.index.count("v1") == 8 and again.index.content_hashes("v1") == svc_hashes(again)
    finally:
        again.close()
    assert runner.invoke(app, ["migrate-engine", "--to", "disk", "--data-dir", str(settings.data_dir)]).exit_code == 2


def svc_hashes(service: Service) -> dict[str, str]:
    """What DuckDB says each point's content hash must be."""
    from flywheel.serve.index import content_hash

    return {d.id: content_hash(d.text, d.metadata) for batch in service.store.iter_documents() for d in batch}
