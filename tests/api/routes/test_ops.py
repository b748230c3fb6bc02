"""The ops routes: /healthz, /stats, /livez and the retention run /ops/gc."""

from __future__ import annotations

from fastapi.testclient import TestClient

from flywheel.api.app import create_app
from flywheel.config import Settings
from tests.helpers.factories import CORPUS, make_documents


def test_healthz_and_stats(loaded_api: TestClient) -> None:
    health = {"status": "ok", "model_version": "v1", "documents": len(CORPUS), "encoder_backend": "torch"}
    assert loaded_api.get("/healthz").json() == health


def test_gc_is_admin_only_counts_on_a_dry_run_and_deletes_on_a_real_one(tmp_path, tiny_model_path) -> None:
    settings = Settings(
        data_dir=tmp_path / "d",
        base_model=str(tiny_model_path),
        admin_keys=["adm"],
        search_keys=["srch"],
        retain_tombstones_days=1,
    )
    admin = {"Authorization": "Bearer adm"}
    with TestClient(create_app(settings)) as api:
        assert api.post("/documents", json={"documents": make_documents()}, headers=admin).status_code == 200
        assert api.delete("/documents/d1", headers=admin).status_code == 204
        store = api.app.state.service.store
        store.query("UPDATE document_deletions SET deleted_at = deleted_at - INTERVAL 2 DAY")
        assert api.post("/ops/gc").status_code == 401
        assert api.post("/ops/gc", headers={"Authorization": "Bearer srch"}).status_code == 403
        bad = api.post("/ops/gc", json={"dry_run": "perhaps"}, headers=admin)
        assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "dry_run"]
        assert api.post("/ops/gc", json={"dryrun": True}, headers=admin).status_code == 422  # a typo is no run

        preview = api.post("/ops/gc", json={"dry_run": True}, headers=admin)
        assert preview.status_code == 200 and preview.json()["dry_run"] is True
        assert (
            preview.json()["deleted"]["tombstones"] == 1
            and store.query("SELECT count(*) FROM document_deletions")[0][0] == 1
        )
        done = api.post("/ops/gc", headers=admin).json()
        assert done["dry_run"] is False and done["deleted"] == {**preview.json()["deleted"]}
        assert store.query("SELECT count(*) FROM document_deletions")[0][0] == 0
        assert done["kept"]["consumed_until"] is None  # no cycle has run: the log stays whole
