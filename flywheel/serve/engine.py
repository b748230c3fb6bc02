"""Which vector engine holds a data dir's collections, and the one factory that opens it.

A data dir records its embedded engine in `<data_dir>/engine.json` on first start and keeps opening with it:
a setting that names the other engine is a ConfigError, and `migrate_engine` (`flywheel migrate-engine`)
moves the collections across, copying the stored vectors (no re-encoding).
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from qdrant_client import QdrantClient, models

from flywheel.config import Settings
from flywheel.errors import ConfigError, IndexMismatch, InvalidInput
from flywheel.models.registry import Registry
from flywheel.serve.edge_index import EdgeIndex
from flywheel.serve.index import Index, content_hash, open_qdrant
from flywheel.serve.store import Store
from flywheel.util.files import now_iso, read_json, write_json_atomic

log = logging.getLogger(__name__)

ENGINES = ("edge", "local")
# The engine of a NEW data dir when `qdrant_engine` is unset: measured against local mode in docs/engines.md.
DEFAULT_ENGINE = "edge"
RECORD_FILE = "engine.json"

VectorIndex = Index | EdgeIndex


def edge_dir(settings: Settings) -> Path:
    """The Qdrant Edge folder of a data dir (one shard per version)."""
    return settings.data_dir / "qdrant-edge"


def engine_dir(settings: Settings, engine: str) -> Path:
    """The folder an embedded engine keeps its collections in."""
    return edge_dir(settings) if engine == "edge" else settings.qdrant_dir


def recorded_engine(settings: Settings) -> str | None:
    """The engine the data dir records, or None when it records none (new, or made before records)."""
    path = settings.data_dir / RECORD_FILE
    return str(read_json(path)["engine"]) if path.is_file() else None


def _made_by_local_mode(settings: Settings) -> bool:
    """A data dir from before engines were recorded: it has a local-mode folder with something in it."""
    return settings.qdrant_dir.is_dir() and any(settings.qdrant_dir.iterdir())


def _record(settings: Settings, engine: str) -> None:
    write_json_atomic(settings.data_dir / RECORD_FILE, {"engine": engine, "recorded_at": now_iso()})


def resolve_engine(settings: Settings) -> str:
    """The engine to open: "server" with `qdrant_url`, else the data dir's recorded engine (recorded now on
    first start: `qdrant_engine`, or local mode for a data dir that already has its folder, else the default).

    Raises:
        ConfigError: `qdrant_engine` names another engine than the data dir records.
    """
    if settings.qdrant_url:
        return "server"
    recorded = recorded_engine(settings)
    if recorded is None:
        recorded = "local" if _made_by_local_mode(settings) else settings.qdrant_engine or DEFAULT_ENGINE
        _record(settings, recorded)
    if settings.qdrant_engine is not None and settings.qdrant_engine != recorded:
        raise ConfigError(
            f"FLYWHEEL_QDRANT_ENGINE is {settings.qdrant_engine!r} but the data dir {settings.data_dir} was made "
            f"with {recorded!r} (see {settings.data_dir / RECORD_FILE}): unset it, or move the data dir with "
            f"`flywheel migrate-engine --to {settings.qdrant_engine}` while no server runs"
        )
    return recorded


def open_engine(settings: Settings, engine: str, folder: Path | None = None) -> VectorIndex:
    """Open one engine's index with the settings' alias and HNSW parameters (in `folder` if given).

    Raises:
        StoreLocked: another process holds the folder.
    """
    if engine == "edge":
        return EdgeIndex(
            folder or edge_dir(settings),
            settings.collection_alias,
            hnsw_m=settings.hnsw_m,
            hnsw_ef_construct=settings.hnsw_ef_construct,
            hnsw_ef=settings.hnsw_ef,
            quantization=settings.quantization,
            payload_indexes=settings.payload_indexes,
        )
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        client = QdrantClient(path=str(folder))
    else:
        client = open_qdrant(settings)
    index = Index(
        client,
        settings.collection_alias,
        settings.qdrant_shards,
        settings.qdrant_replication,
        settings.payload_indexes,
    )
    if engine == "server":  # local mode has no index to tune: it scans
        index.hnsw_config = models.HnswConfigDiff(m=settings.hnsw_m, ef_construct=settings.hnsw_ef_construct)
        if settings.quantization == "int8":
            index.quantization_config = models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
            )
        index.search_params = models.SearchParams(
            hnsw_ef=settings.hnsw_ef,
            quantization=models.QuantizationSearchParams(rescore=True) if settings.quantization == "int8" else None,
        )
    return index


def open_index(settings: Settings) -> VectorIndex:
    """Open the index the settings and the data dir's record choose (the one place that decides).

    Raises:
        ConfigError: the setting and the record disagree.
        StoreLocked: another process holds the engine's folder.
    """
    return open_engine(settings, resolve_engine(settings))


@dataclass
class Migration:
    """What `migrate_engine` did."""

    source: str
    target: str
    copied: dict[str, int] = field(default_factory=dict)  # version -> points copied
    left_to_repair: dict[str, int] = field(default_factory=dict)  # version -> documents the next start embeds
    serving: str | None = None


def migrate_engine(settings: Settings, to: str) -> Migration:
    """Move every kept collection of a data dir to another embedded engine, then switch the record.

    Vectors are copied, never re-encoded: each collection is scrolled and its points whose content hash still
    matches DuckDB are written to the other engine (with the serving pointer and each collection's backend
    marker); the rest is re-embedded by the repair of the next start. The new folder is built beside the old
    one and moved into place only when every collection is complete; the record switches after that and the
    old folder is removed last, so a crash at any point leaves a data dir that opens with one engine or the
    other, whole.

    Raises:
        ConfigError: `qdrant_url` is set (the vectors live on the server).
        InvalidInput: `to` is not an embedded engine, or the data dir already uses it.
        StoreLocked: a server (or another command) holds the data dir.
    """
    if settings.qdrant_url:
        raise ConfigError(
            "migrate-engine moves an embedded index: with FLYWHEEL_QDRANT_URL set the vectors live on the server"
        )
    if to not in ENGINES:
        raise InvalidInput(f"--to must be one of {', '.join(ENGINES)}, not {to!r}")
    store = Store(settings.db_file)  # the data dir's lock: refuses while a server runs
    try:
        current = recorded_engine(settings) or ("local" if _made_by_local_mode(settings) else None)
        if current == to:
            raise InvalidInput(f"the data dir {settings.data_dir} already uses {to!r}")
        result = Migration(source=current or "none", target=to)
        final = engine_dir(settings, to)
        if current is not None:
            staging = final.with_name(f".{final.name}.migrating")
            shutil.rmtree(staging, ignore_errors=True)  # a migration that was cut short
            _copy_all(settings, store, current, to, staging, result)
            if final.exists():  # an earlier migration's folder that was never switched to
                shutil.rmtree(final)
            os.rename(staging, final)
        _record(settings, to)
        if current is not None:
            shutil.rmtree(engine_dir(settings, current), ignore_errors=True)
        return result
    finally:
        store.close()


def _copy_all(settings: Settings, store: Store, current: str, to: str, staging: Path, result: Migration) -> None:
    """Copy every collection of the `current` engine into a `to` index built in `staging`."""
    registry = Registry(settings.models_dir)
    source = open_engine(settings, current)
    try:
        target = open_engine(settings, to, folder=staging)
        try:
            known = {v.version: v for v in registry.versions()}
            for version in source.versions():
                if version not in known:  # a cycle's leftover: the next cycle's recovery would drop it anyway
                    log.warning("not copying %s: no model version of that name", source.collection(version))
                    continue
                dimension = known[version].dimension
                result.copied[version], result.left_to_repair[version] = _copy(
                    source, target, store, version, dimension
                )
                target.optimize(version)
            result.serving = source.serving_version()
            if result.serving is not None:
                target.point_alias(result.serving)
        finally:
            target.close()
    finally:
        source.close()


def _copy(source: VectorIndex, target: VectorIndex, store: Store, version: str, dimension: int) -> tuple[int, int]:
    """Copy one collection's up-to-date points; return (copied, left to repair).

    Raises:
        IndexMismatch: the new collection does not hold what was written to it.
    """
    hashes = source.content_hashes(version)
    ids, vectors = source.all_vectors(version, dimension)
    row = {doc_id: i for i, doc_id in enumerate(ids)}
    target.create(version, dimension, replace=True, backend=source.vectors_backend(version))
    copied = left = 0
    for batch in store.iter_documents(batch_size=2048):
        # A point embedded from other text than DuckDB holds (a crash mid-write) is not copied: repair re-embeds it.
        keep = [d for d in batch if d.id in row and hashes.get(d.id) == content_hash(d.text, d.metadata)]
        left += len(batch) - len(keep)
        if keep:
            target.upsert(version, keep, vectors[[row[d.id] for d in keep]])
            copied += len(keep)
    if target.count(version) != copied:
        raise IndexMismatch(f"{target.collection(version)} holds {target.count(version)} points, {copied} were copied")
    log.info("copied %s: %d points (%d left to the next start's repair)", target.collection(version), copied, left)
    return copied, left


__all__ = [
    "DEFAULT_ENGINE",
    "ENGINES",
    "RECORD_FILE",
    "Migration",
    "VectorIndex",
    "edge_dir",
    "migrate_engine",
    "open_engine",
    "open_index",
    "recorded_engine",
    "resolve_engine",
]
