"""The HTTP contract's bodies: what clients send and what they get back (pydantic models, strict)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt


class ErrorOut(BaseModel):
    detail: Any = Field(description="what went wrong and what to fix (a list of field errors for 422 validation)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DocumentIn(_Strict):
    id: str = Field(min_length=1, description="your id for the document; re-posting an id replaces it")
    text: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict)


class DocumentsIn(_Strict):
    documents: list[DocumentIn]


class UpsertOut(BaseModel):
    upserted: int


class SearchIn(_Strict):
    query: str
    k: StrictInt | None = Field(None, description="number of hits; default and maximum come from settings")
    user_id: str | None = None
    session_id: str | None = None


class HitOut(BaseModel):
    doc_id: str
    text: str
    score: float
    rank: int
    metadata: dict[str, Any]


class SearchOut(BaseModel):
    search_id: str
    model_version: str
    hits: list[HitOut]


class EventIn(_Strict):
    event_id: str = Field(min_length=1, description="idempotency key: a repeated event_id is not stored twice")
    search_id: str = Field(min_length=1)
    doc_id: str = Field(min_length=1)
    type: Literal["click", "skip", "thumbs_up", "thumbs_down"]
    ts: datetime | None = Field(None, description="when it happened; default: when it was received")


class FeedbackIn(_Strict):
    events: list[EventIn]


class FeedbackOut(BaseModel):
    accepted: int
    duplicates: int


class HealthOut(BaseModel):
    status: str
    model_version: str
    documents: int


class CycleOut(BaseModel):
    cycle_id: str
    trigger: str
    state: Literal["queued", "running", "promoted", "rejected", "failed"]
    stage: str | None
    started_at: str | None
    finished_at: str | None
    error: str | None
    incumbent: str | None
    candidate: str | None


class CycleStarted(BaseModel):
    cycle_id: str


class RollbackIn(_Strict):
    to: str | None = Field(None, description="version to serve; default: the one before the incumbent")


class RollbackOut(BaseModel):
    model_version: str
    previous: str


class StatsOut(BaseModel):
    documents: int
    searches: int
    impressions: int
    events: int
