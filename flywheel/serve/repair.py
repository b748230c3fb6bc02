"""Start-up repair: make a collection hold what DuckDB holds, made by a backend the query encoder matches.

DuckDB is the source of truth; a crash between the two writes of a document, or a change of the encoder
backend, leaves a collection that `Service.reconcile` mends here before it serves.
"""

from __future__ import annotations

import logging
from typing import Protocol

from flywheel.models.encoder import Encoder, compatible
from flywheel.models.registry import ModelVersion
from flywheel.serve.index import Index, content_hash
from flywheel.serve.store import Store
from flywheel.types import Document

log = logging.getLogger(__name__)


class Service(Protocol):
    """What repair needs of the Service (which calls it while it opens)."""

    index: Index
    store: Store

    def bulk_encoder(self, entry: ModelVersion, query: Encoder) -> Encoder: ...

    def rebuild(self, version: str, bulk: Encoder, dimension: int | None = None, progress: bool = False) -> None: ...

    def embed_into(self, version: str, encoder: Encoder, docs: list[Document], progress: bool = False) -> None: ...


def match_backend(service: Service, entry: ModelVersion, encoder: Encoder, progress: bool) -> None:
    """Rebuild a collection whose vectors were made by a backend of another precision than the query
    encoder's (e.g. torch fp32 vectors, onnx-int8 queries): the two are never mixed."""
    made_by = service.index.vectors_backend(entry.version)
    if compatible(made_by, encoder.backend):
        return
    bulk = service.bulk_encoder(entry, encoder)
    log.warning(
        "%s holds %s vectors but queries are encoded with %s: re-embedding its %d documents with %s",
        service.index.collection(entry.version),
        made_by or "torch",
        encoder.backend,
        service.store.count_documents(),
        bulk.backend,
    )
    service.rebuild(entry.version, bulk, encoder.dimension, progress=progress)


def repair(service: Service, version: str, encoder: Encoder, progress: bool) -> None:
    """Make a collection hold exactly the stored documents: embed missing and changed ones, drop the rest.

    Ids and content hashes are compared, not counts: a crash between the Qdrant upsert and the DuckDB
    commit of a replace leaves the same ids on both sides, but a point embedded from text DuckDB never
    committed. DuckDB is the source of truth.
    """
    in_index = service.index.content_hashes(version)
    stored: set[str] = set()
    todo: list[Document] = []
    for batch in service.store.iter_documents(batch_size=2048):
        for doc in batch:
            stored.add(doc.id)
            if in_index.get(doc.id) != content_hash(doc.text, doc.metadata):
                todo.append(doc)
    stale = sorted(set(in_index) - stored)
    if not todo and not stale:
        return
    missing = sum(1 for d in todo if d.id not in in_index)
    log.warning(
        "repairing %s: %d missing, %d changed, %d stale points", version, missing, len(todo) - missing, len(stale)
    )
    service.index.delete(version, stale)
    if todo:
        service.embed_into(version, encoder, todo, progress=progress)
