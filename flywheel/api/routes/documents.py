"""Routes on the corpus: add or replace documents, delete one (admin key)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response

from flywheel.api.deps import AdminKey, ServiceDep, SettingsDep
from flywheel.api.schemas import DocumentIn, DocumentsIn, UpsertOut, control_char, nesting_depth
from flywheel.config import Settings
from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.types import Document

router = APIRouter()


@router.post("/documents", response_model=UpsertOut, dependencies=[AdminKey], tags=["documents"])
def post_documents(body: DocumentsIn, svc: ServiceDep, settings: SettingsDep) -> UpsertOut:
    """Add or replace documents (embedded with the serving model)."""
    check_documents(settings, body.documents)
    docs = [Document(d.id, d.text, d.metadata) for d in body.documents]
    return UpsertOut(upserted=svc.upsert_documents(docs))


# `:path` so that an id with `/` in it (`faq/1`, sent as is or as `faq%2F1`) reaches the route whole.
@router.delete("/documents/{doc_id:path}", status_code=204, dependencies=[AdminKey], tags=["documents"])
def delete_document(doc_id: str, svc: ServiceDep) -> Response:
    """Delete a document (its id may hold `/`); 404 if unknown."""
    svc.delete_document(doc_id)
    return Response(status_code=204)


def check_documents(settings: Settings, docs: list[DocumentIn]) -> None:
    """Apply the settings' limits to a documents batch; the message names the first bad document."""
    if not docs:
        raise InvalidInput("documents must not be empty")
    if len(docs) > settings.max_documents_per_request:
        raise PayloadTooLarge(
            f"{len(docs)} documents in one request; the limit is {settings.max_documents_per_request}"
        )
    for i, d in enumerate(docs):
        name = f"documents[{i}] (id {d.id[:80]!r})"
        if len(d.id) > settings.max_id_chars:
            raise InvalidInput(f"documents[{i}].id is over {settings.max_id_chars} characters")
        if not d.text.strip():
            raise InvalidInput(f"{name}: text must not be blank")
        if len(d.text) > settings.max_document_chars:
            raise InvalidInput(f"{name}: text is {len(d.text)} characters; the limit is {settings.max_document_chars}")
        at = control_char(d.text)
        if at is not None:
            raise InvalidInput(
                f"{name}: text has the control character U+{ord(d.text[at]):04X} at position {at}; "
                "send plain text (tabs and newlines are fine)"
            )
        depth = nesting_depth(d.metadata)
        if depth > settings.max_metadata_depth:
            raise InvalidInput(
                f"{name}: metadata nests {depth} levels deep; the limit is {settings.max_metadata_depth} "
                "(max_metadata_depth)"
            )
        size = len(json.dumps(d.metadata, ensure_ascii=False).encode("utf-8"))
        if size > settings.max_metadata_bytes:
            raise InvalidInput(
                f"{name}: metadata is {size} bytes as UTF-8 JSON; the limit is {settings.max_metadata_bytes}"
            )
