"""The HTTP contract's bodies: what clients send and what they get back (pydantic models, strict)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, field_validator

from flywheel.config import METADATA_KEY


def _plain(value: str) -> str:
    """Refuse what cannot be stored, encoded or logged: lone surrogates (not Unicode text) and NUL."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("contains a lone UTF-16 surrogate, which is not valid Unicode: send UTF-8 text")
    if "\x00" in value:
        raise ValueError("contains control characters (NUL); send plain text")
    return value


def _identifier(value: str) -> str:
    """Ids end up in logs, SQL rows and URLs: no control characters at all."""
    _plain(value)
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value):
        raise ValueError("contains control characters; ids must be printable")
    return value


def control_char(text: str) -> int | None:
    """Position of the first C0 control character other than tab and newlines, or DEL (they break terminals,
    logs and tokenizers), or None; one rule for queries and document texts.

    C1 characters (U+0080-U+009F) are let through: real corpora carry them as mis-decoded punctuation (U+0096
    for an en dash from cp1252), and refusing a whole batch for one would be worse than indexing it.
    """
    for i, c in enumerate(text):
        if (ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127:
            return i
    return None


def nesting_depth(value: Any) -> int:
    """How deep objects and lists nest in a JSON value (a scalar is 0, `{}` is 1); iterative, so a hostile
    value cannot exhaust the stack."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


PlainStr = Annotated[str, AfterValidator(_plain)]
IdStr = Annotated[str, AfterValidator(_identifier)]


class ErrorOut(BaseModel):
    detail: Any = Field(description="what went wrong and what to fix (a list of field errors for 422 validation)")


ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 422, 503)
"""Every error status a route may answer; each has an `ErrorOut` JSON body."""

JSON_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}}
    for status in ERROR_STATUSES
}
"""OpenAPI `responses` for a route whose success body is not JSON: its errors still are."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentIn(_Strict):
    id: IdStr = Field(min_length=1, description="your id for the document; re-posting an id replaces it")
    text: PlainStr = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("metadata")
    @classmethod
    def _encodable(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, ValueError, RecursionError) as exc:
            raise ValueError(f"metadata is not storable as UTF-8 JSON ({type(exc).__name__})") from None
        return value


class DocumentsIn(_Strict):
    documents: list[DocumentIn]


class UpsertOut(BaseModel):
    upserted: int


FilterScalar = Annotated[str, AfterValidator(_plain)] | StrictInt | bool


class SearchIn(_Strict):
    query: PlainStr
    k: StrictInt | None = Field(None, description="number of hits; default and maximum come from settings")
    user_id: IdStr | None = None
    session_id: IdStr | None = None
    filter: dict[str, FilterScalar | list[FilterScalar]] | None = Field(
        None,
        description="metadata filter: key -> a value the document's metadata must equal, or a list of values it "
        'must be one of; every key must hold (e.g. {"tenant": "acme", "lang": ["en", "de"]}); dotted keys '
        "reach nested metadata",
        max_length=16,
    )

    @field_validator("filter")
    @classmethod
    def _filter_shape(
        cls, value: dict[str, FilterScalar | list[FilterScalar]] | None
    ) -> dict[str, FilterScalar | list[FilterScalar]] | None:
        for key, allowed in (value or {}).items():
            if not METADATA_KEY.fullmatch(key):
                raise ValueError(f"filter key {key!r}: use letters, digits, _ and -, dotted for nested metadata")
            if isinstance(allowed, list) and not 1 <= len(allowed) <= 100:
                raise ValueError(f"filter {key!r}: a list needs 1 to 100 values")
        return value or None


class HitOut(BaseModel):
    doc_id: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any]


class ExperimentOut(BaseModel):
    id: str = Field(description="the online test's id (the cycle whose candidate is tested)")
    arm: Literal["interleaved", "incumbent", "shadow"] = Field(
        description="interleaved: the list merges the incumbent's and the candidate's results; incumbent: the "
        "incumbent's alone (outside the interleaved share); shadow: the incumbent's, the candidate ranked unseen"
    )
    challenger: str | None = Field(None, description="the candidate's version, on interleaved lists")


class SearchOut(BaseModel):
    search_id: str
    model_version: str
    hits: list[HitOut]
    experiment: ExperimentOut | None = Field(None, description="set while an online test runs (see docs/online.md)")


class EventIn(_Strict):
    event_id: IdStr = Field(min_length=1, description="idempotency key: a repeated event_id is not stored twice")
    search_id: IdStr = Field(min_length=1)
    doc_id: IdStr = Field(min_length=1)
    type: Literal["click", "skip", "thumbs_up", "thumbs_down"]
    ts: datetime | None = Field(None, description="when it happened; default: when it was received")

    @field_validator("ts")
    @classmethod
    def _in_range(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            try:
                value.astimezone(UTC)
            except OverflowError:
                raise ValueError("ts is out of range once converted to UTC") from None
        return value


class FeedbackIn(_Strict):
    events: list[EventIn]


class FeedbackOut(BaseModel):
    accepted: int
    duplicates: int


class HealthOut(BaseModel):
    status: str
    model_version: str
    documents: int
    encoder_backend: str | None = None


class CycleOut(BaseModel):
    cycle_id: str
    trigger: str
    state: Literal["queued", "running", "testing", "promoted", "rejected", "failed"]
    stage: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None
    incumbent: str | None
    candidate: str | None
    kind: str | None = Field(None, description="'adapter' or 'full'")
    online: dict[str, Any] | None = Field(
        None, description="while testing: the online test's live counts, win share and band (docs/online.md)"
    )


class StopIn(_Strict):
    decision: Literal["promote", "reject"] = Field(description="promote the candidate now, or keep the incumbent")


class CycleIn(_Strict):
    mode: Literal["adapter", "full", "auto"] | None = Field(
        None, description="kind of cycle; default: the cycle_mode setting ('auto': full with CUDA, else adapter)"
    )


class CycleStarted(BaseModel):
    cycle_id: str


class RollbackIn(_Strict):
    to: IdStr | None = Field(None, description="version to serve; default: the one before the incumbent")


class RollbackOut(BaseModel):
    model_version: str
    previous: str


class StatsOut(BaseModel):
    documents: int
    searches: int
    impressions: int
    events: int


class GcIn(_Strict):
    dry_run: bool = Field(False, description="count what would be deleted, delete nothing")


class GcDeleted(BaseModel):
    searches: int = Field(description="searches, each with its query text, ids and query vector")
    impressions: int = Field(description="results those searches showed")
    events: int = Field(description="feedback events")
    shadow_rankings: int = Field(description="what a shadow test's challenger would have shown")
    query_vectors: int = Field(
        description="logged query vectors dropped because a newer search of the same query keeps one"
    )
    tombstones: int = Field(description="records of deleted documents")
    reports: int = Field(description="promotion report folders")
    snapshots: int = Field(description="per-cycle pair snapshot folders")


class GcKept(BaseModel):
    consumed_until: str | None = Field(description="feedback received after this (no cycle has learned from it) stays")
    held_out_from: str | None = Field(
        description="searches from this time on (the latest cycles' held-out next traffic) stay; null: all stay"
    )
    tombstones_from: str | None = Field(description="tombstones from this time on stay (a rollback would replay them)")
    cycles: list[str] = Field(
        description="cycles whose report and snapshot stay (serving model, rollback targets, latest)"
    )


class GcOut(BaseModel):
    dry_run: bool
    deleted: GcDeleted
    kept: GcKept
