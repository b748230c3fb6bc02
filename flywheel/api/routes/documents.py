"""Routes on the corpus: add or replace documents, delete one (admin key)."""

from __future__ import annotations

import json

from fastapi import APIRouter, Response

from flywheel.api.deps import AdminKey, ServiceDep, SettingsDep
from flywheel.api.schemas import DocumentIn, DocumentsIn, UpsertOut
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


@router.delete("/documents/{doc_id}", status_code=204, dependencies=[AdminKey], tags=["documents"])
def delete_document(doc_id: str, svc: ServiceDep) -> Response:
    """Delete a document; 404 if unknown."""
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
        if len(d.id) > settings.max_id_chars:
            raise InvalidInput(f"documents[{i}].id is over {settings.max_id_chars} characters")
        if not d.text.strip():
            raise InvalidInput(f"documents[{i}].text must not be blank")
        if len(d.text) > settings.max_document_chars:
            raise InvalidInput(
                f"documents[{i}].text is {len(d.text)} characters; the limit is {settings.max_document_chars}"
            )
        if len(json.dumps(d.metadata, ensure_ascii=False)) > settings.max_metadata_bytes:
            raise InvalidInput(f"documents[{i}].metadata is over {settings.max_metadata_bytes} bytes as JSON")
