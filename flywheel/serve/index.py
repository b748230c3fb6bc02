"""Vector index: one Qdrant collection per model version (`<alias>__<version>`), served through an alias.

The same qdrant-client calls run against local mode (a folder) and a Qdrant server or cluster.
"""

from __future__ import annotations

import hashlib
import json
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models
from rich.progress import Progress

from flywheel.config import Settings
from flywheel.errors import StoreLocked
from flywheel.types import Document, Hit

# Collection metadata key naming the encoder backend that made the collection's vectors.
BACKEND_KEY = "flywheel_vectors_backend"
# Collection metadata key recording the payload indexes flywheel declared on it (JSON text, so an update
# replaces it whole rather than merging into it).
INDEXES_KEY = "flywheel_payload_indexes"
# Payload key holding `content_hash` of what a point was embedded from (points written before it have none).
HASH_KEY = "content_hash"
# Fixed namespace so the same document id maps to the same point id in every collection and process.
_POINT_NAMESPACE = uuid.UUID("3f1c6a52-8f0e-4d55-9a51-2b6f0b6e7a10")


def point_id(doc_id: str) -> str:
    """Map a user's document id (any string) to a stable Qdrant point id (UUID5)."""
    return str(uuid.uuid5(_POINT_NAMESPACE, doc_id))


def content_hash(text: str, metadata: dict[str, Any] | None) -> str:
    """A digest of a document's text and metadata, so start-up repair can tell a point from a stale copy."""
    canonical = json.dumps([text, metadata or {}], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def open_qdrant(settings: Settings) -> QdrantClient:
    """Open Qdrant: a server when `qdrant_url` is set, else local mode under the data dir.

    Raises:
        StoreLocked: another process holds the local-mode folder.
    """
    if settings.qdrant_url:
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=key)
    settings.qdrant_dir.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(settings.qdrant_dir))
    except RuntimeError as exc:
        if "already accessed" in str(exc):
            raise StoreLocked(
                f"{settings.qdrant_dir} is in use by another process (is `flywheel serve` running?)"
            ) from exc
        raise


class Index:
    """Collections, the serving alias, upserts and searches."""

    # HNSW, quantization and search parameters of new collections (server mode: set by `engine.open_index`).
    hnsw_config: models.HnswConfigDiff | None = None
    quantization_config: models.ScalarQuantization | None = None
    search_params: models.SearchParams | None = None

    def __init__(
        self,
        client: QdrantClient,
        alias: str,
        shards: int = 1,
        replication: int = 1,
        payload_indexes: dict[str, str] | None = None,
    ) -> None:
        """Args: client: an open QdrantClient; alias: the serving alias (e.g. "documents"); payload_indexes:
        metadata key -> Qdrant index type, kept on every collection (see `ensure_payload_indexes`)."""
        self.client = client
        self.alias = alias
        self.shards = shards
        self.replication = replication
        self.payload_indexes = dict(payload_indexes or {})

    def collection(self, version: str) -> str:
        """The collection name of a model version."""
        return f"{self.alias}__{version}"

    def exists(self, version: str) -> bool:
        """Whether the version's collection exists."""
        return self.client.collection_exists(self.collection(version))

    def create(self, version: str, dimension: int, replace: bool = False, backend: str | None = None) -> str:
        """Create the version's collection (cosine distance); with `replace`, drop a leftover first.

        Args:
            version: the model version.
            dimension: vector size.
            replace: drop an existing collection of that name first.
            backend: the encoder backend that will make its vectors, recorded in the collection's metadata
                (see `vectors_backend`).

        Returns:
            The collection name.
        """
        name = self.collection(version)
        if self.client.collection_exists(name):
            if not replace:
                return name
            self.client.delete_collection(name)
        self.client.create_collection(
            name,
            vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
            shard_number=self.shards,
            replication_factor=self.replication,
            metadata={BACKEND_KEY: backend} if backend else None,
            hnsw_config=self.hnsw_config,
            quantization_config=self.quantization_config,
        )
        # Before any point: the server then indexes points as they arrive instead of in one pass afterwards.
        self.ensure_payload_indexes(version)
        return name

    def ensure_payload_indexes(self, version: str) -> None:
        """Give a version's collection the declared payload indexes (on `metadata.<key>`) and drop those flywheel
        declared earlier that are no longer declared; indexes made by others are left alone.

        Cheap when nothing changed (one collection read), so it runs on start and before every swap.
        """
        name = self.collection(version)
        info = self.client.get_collection(name)
        schema = _indexed_fields(info)
        recorded = self.declared_indexes(version, info)
        with warnings.catch_warnings():
            # Local mode accepts payload indexes but keeps none: the same calls run there, without its warning.
            warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local Qdrant")
            for key, kind in self.payload_indexes.items():
                if schema.get(f"metadata.{key}") != kind:
                    self.client.create_payload_index(name, f"metadata.{key}", models.PayloadSchemaType(kind), wait=True)
            for key in recorded.keys() - self.payload_indexes.keys():
                if f"metadata.{key}" in schema:
                    self.client.delete_payload_index(name, f"metadata.{key}", wait=True)
        if recorded != self.payload_indexes:
            self.client.update_collection(
                name, metadata={INDEXES_KEY: json.dumps(self.payload_indexes, sort_keys=True)}
            )

    def declared_indexes(self, version: str, info: models.CollectionInfo | None = None) -> dict[str, str]:
        """The payload indexes flywheel declared on a version's collection (metadata key -> type), as recorded in
        the collection's metadata: what local mode, which keeps no payload indexes, can still show."""
        info = info or self.client.get_collection(self.collection(version))
        text = (info.config.metadata or {}).get(INDEXES_KEY)
        return json.loads(text) if text else {}

    def payload_schema(self, version: str) -> dict[str, str]:
        """The payload indexes Qdrant reports for a version's collection (field -> type; empty in local mode)."""
        return _indexed_fields(self.client.get_collection(self.collection(version)))

    def vectors_backend(self, version: str) -> str | None:
        """The encoder backend recorded as the maker of a collection's vectors (None: made before backends
        were recorded, i.e. by torch). Kept in Qdrant's collection metadata, so it lives and dies with them."""
        metadata = self.client.get_collection(self.collection(version)).config.metadata or {}
        return metadata.get(BACKEND_KEY)

    def drop(self, version: str) -> None:
        """Delete a version's collection if it exists."""
        name = self.collection(version)
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def versions(self) -> list[str]:
        """Model versions that have a collection under this alias's prefix."""
        prefix = f"{self.alias}__"
        names = [c.name for c in self.client.get_collections().collections]
        return sorted(n[len(prefix) :] for n in names if n.startswith(prefix))

    def serving_version(self) -> str | None:
        """The version whose collection the alias points at, or None when the alias is not set."""
        for alias in self.client.get_aliases().aliases:
            if alias.alias_name == self.alias:
                return alias.collection_name.removeprefix(f"{self.alias}__")
        return None

    def point_alias(self, version: str) -> None:
        """Point the alias at a version's collection in ONE atomic update_collection_aliases call."""
        ops: list[Any] = []
        if self.serving_version() is not None:
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=self.alias)))
        ops.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(collection_name=self.collection(version), alias_name=self.alias)
            )
        )
        self.client.update_collection_aliases(change_aliases_operations=ops)

    def count(self, version: str) -> int:
        """Exact number of points in a version's collection."""
        return int(self.client.count(self.collection(version), exact=True).count)

    def upsert(
        self,
        version: str,
        docs: list[Document],
        vectors: np.ndarray,
        batch_size: int = 256,
        progress: Progress | None = None,
    ) -> None:
        """Write documents with their vectors to a version's collection, in batches, waiting for each.

        Args:
            version: the model version whose collection receives the points.
            docs: the documents (text and metadata go in the payload).
            vectors: one row per document.
            batch_size: points per request.
            progress: an optional rich Progress to advance.
        """
        task = progress.add_task("upserting", total=len(docs)) if progress else None
        name = self.collection(version)
        for start in range(0, len(docs), batch_size):
            chunk = docs[start : start + batch_size]
            points = [
                models.PointStruct(
                    id=point_id(d.id),
                    vector=vectors[start + i].tolist(),
                    payload={
                        "doc_id": d.id,
                        "text": d.text,
                        "metadata": d.metadata,
                        HASH_KEY: content_hash(d.text, d.metadata),
                    },
                )
                for i, d in enumerate(chunk)
            ]
            self.client.upsert(name, points=points, wait=True)
            if progress is not None and task is not None:
                progress.advance(task, len(chunk))

    def delete(self, version: str, doc_ids: list[str]) -> None:
        """Remove documents from a version's collection (unknown ids are ignored)."""
        if doc_ids:
            self.client.delete(
                self.collection(version),
                points_selector=models.PointIdsList(points=[point_id(d) for d in doc_ids]),
                wait=True,
            )

    def search(
        self,
        vector: np.ndarray,
        k: int,
        collection: str | None = None,
        metadata_filter: dict[str, Any] | None = None,
    ) -> list[Hit]:
        """Nearest neighbours of a query vector, through the alias unless a collection is named.

        Args:
            vector: the query vector.
            k: how many hits.
            collection: a collection instead of the alias.
            metadata_filter: metadata key -> a value it must equal, or a list of values it must be one of; every
                key must hold (Qdrant filters the candidates natively, so k hits come back when k match).
        """
        query_filter = _payload_filter(metadata_filter) if metadata_filter else None
        result = self.client.query_points(
            collection or self.alias,
            query=vector.tolist(),
            limit=k,
            with_payload=True,
            query_filter=query_filter,
            search_params=self.search_params,
        )
        return [
            Hit(
                doc_id=p.payload["doc_id"],
                text=p.payload.get("text", ""),
                score=float(p.score),
                metadata=p.payload.get("metadata") or {},
            )
            for p in result.points
        ]

    def scroll_vectors(self, version: str, batch_size: int = 1024) -> Iterator[tuple[list[str], np.ndarray]]:
        """Yield (doc_ids, vectors) of a version's collection in batches (reuse of stored embeddings)."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.collection(version), limit=batch_size, offset=offset, with_payload=True, with_vectors=True
            )
            if points:
                yield [p.payload["doc_id"] for p in points], np.asarray([p.vector for p in points], np.float32)
            if offset is None:
                return

    def all_vectors(self, version: str, dimension: int) -> tuple[list[str], np.ndarray]:
        """Every (doc_id, vector) of a version's collection, as ids and one (n, dimension) matrix."""
        ids: list[str] = []
        chunks = [np.zeros((0, dimension), np.float32)]
        for batch_ids, vectors in self.scroll_vectors(version, batch_size=4096):
            ids.extend(batch_ids)
            chunks.append(vectors)
        return ids, np.concatenate(chunks)

    def matching_ids(self, version: str, metadata_filter: dict[str, Any], batch_size: int = 4096) -> set[str]:
        """Ids of the documents in a version's collection whose metadata match a search's filter, judged by
        Qdrant with the very filter searches use (so evaluation sees what users could have been shown)."""
        name, query_filter = self.collection(version), _payload_filter(metadata_filter)
        found: set[str] = set()
        offset = None
        while True:
            points, offset = self.client.scroll(
                name, scroll_filter=query_filter, limit=batch_size, offset=offset, with_payload=["doc_id"]
            )
            found.update(p.payload["doc_id"] for p in points)
            if offset is None:
                return found

    def content_hashes(self, version: str, batch_size: int = 1024) -> dict[str, str]:
        """Document id -> `content_hash` of every point in a version's collection (start-up repair).

        Reads only ids and hashes; a point written before hashes were stored is hashed from its payload.
        """
        name = self.collection(version)
        found: dict[str, str] = {}
        offset = None
        while True:
            points, offset = self.client.scroll(
                name, limit=batch_size, offset=offset, with_payload=["doc_id", HASH_KEY], with_vectors=False
            )
            found.update({p.payload["doc_id"]: p.payload[HASH_KEY] for p in points if HASH_KEY in p.payload})
            unhashed = [p.id for p in points if HASH_KEY not in p.payload]
            if unhashed:
                for p in self.client.retrieve(name, ids=unhashed, with_payload=True, with_vectors=False):
                    found[p.payload["doc_id"]] = content_hash(p.payload.get("text", ""), p.payload.get("metadata"))
            if offset is None:
                return found

    def optimize(self, version: str) -> bool:
        """Nothing to do: a Qdrant server indexes in the background and local mode has no index (see
        `EdgeIndex.optimize`). Returns False."""
        return False

    def close(self) -> None:
        """Close the client."""
        self.client.close()


def _indexed_fields(info: models.CollectionInfo) -> dict[str, str]:
    """Payload field -> index type from a collection's info."""
    return {key: str(getattr(s.data_type, "value", s.data_type)) for key, s in (info.payload_schema or {}).items()}


def _payload_filter(metadata_filter: dict[str, Any]) -> models.Filter:
    """The Qdrant filter of a metadata filter: one condition per key on `metadata.<key>`, all of them must hold."""
    conditions: list[Any] = []
    for key, value in metadata_filter.items():
        path = f"metadata.{key}"
        if not isinstance(value, list):
            conditions.append(models.FieldCondition(key=path, match=models.MatchValue(value=value)))
        elif all(isinstance(v, str) for v in value) or all(type(v) is int for v in value):
            conditions.append(models.FieldCondition(key=path, match=models.MatchAny(any=list(value))))
        else:  # booleans or mixed types, which MatchAny cannot hold: any one of the values
            options = [models.FieldCondition(key=path, match=models.MatchValue(value=v)) for v in value]
            conditions.append(models.Filter(should=options))
    return models.Filter(must=conditions)
