"""The cycle report as a typed record: what every kind of cycle fills in, the gate reads, and report.json stores.

A cycle builds one `CycleReport` and hands it from stage to stage; `to_json()` is the stored form (the keys of
report.json are the field names). Reading stored reports stays defensive (`flywheel.cycle.report.view`), since
files on disk may be old or hand-edited.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Decision = Literal["promoted", "rejected", "failed"]


class Window(BaseModel):
    """The feedback window a cycle mined (ISO times; start None = everything logged)."""

    start: str | None = None
    end: str | None = None
    # The first search of the next traffic held out by time (None: none held out); retention keeps it and later.
    next_traffic_start: str | None = None


class Metrics(BaseModel):
    """Incumbent against candidate, each block with both values, the paired delta and its CI.

    Sections a cycle could not measure stay None; later kinds of measurement go in as extra keys.
    """

    model_config = ConfigDict(extra="allow")

    pair_error: dict[str, Any] | None = Field(None, description="the seed's error on held-out labelled pairs")
    golden: dict[str, Any] | None = Field(None, description="pair error on the user's golden pairs")
    retrieval: dict[str, Any] | None = Field(
        None, description="unseen queries: nDCG/MRR/Recall@10 of held-out query groups' clicks, with the MDE"
    )
    next_traffic: dict[str, Any] | None = Field(
        None, description="next traffic: the same over the latest searches as they came (time split)"
    )


class CycleReport(BaseModel):
    """One cycle's record, from its skeleton to its decision."""

    model_config = ConfigDict(extra="allow", validate_assignment=False)

    cycle_id: str
    created_at: str
    kind: str = Field(description='"full" (fine-tune) or "adapter" (query adapter)')
    incumbent: str | None = Field(None, description="what served when the cycle started (an adapter if one did)")
    base: str | None = Field(None, description="adapter cycles: the encoder version the adapter sits on")
    candidate: str | None = None
    serving_after: str | None = None
    decision: Decision | None = None
    reasons: list[str] = Field(default_factory=list)
    checks: list[dict[str, Any]] = Field(default_factory=list)
    window: Window | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    metrics: Metrics = Field(default_factory=Metrics)
    examples: list[dict[str, Any]] = Field(default_factory=list)
    training: dict[str, Any] | None = None
    onnx: dict[str, Any] | None = None
    online: dict[str, Any] | None = Field(
        None, description="the online test (interleaving or shadow) of a candidate that passed the offline gate"
    )
    timings: dict[str, float] = Field(default_factory=dict)
    duration_s: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The stored form (report.json, GET /reports/{id}); `base` only for the kinds that have one."""
        data = self.model_dump(mode="json")
        if data.get("base") is None:
            data.pop("base", None)
        return data

    @property
    def window_end(self) -> str | None:
        """End of the mined window, or None before mining."""
        return self.window.end if self.window else None
