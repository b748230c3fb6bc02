"""The bodies of `POST /ubi/events`: OpenSearch User Behavior Insights events, as the UBI spec defines them.

UBI lets every object carry more properties than the spec names, so unknown fields are accepted and ignored
here (unlike flywheel's own bodies, which refuse them); the fields flywheel reads are typed and checked.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Field, RootModel, StrictInt, Tag, field_validator

from flywheel.api.schemas import IdStr, PlainStr


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class UbiObjectIn(_Open):
    object_id: IdStr | StrictInt | None = Field(
        None, description="the doc_id of the hit acted on (an integer is read as its decimal text)"
    )
    object_id_field: PlainStr | None = Field(None, description="ignored: object_id must be a flywheel doc_id")
    internal_id: PlainStr | StrictInt | None = Field(None, description="ignored")


class UbiPositionIn(_Open):
    ordinal: StrictInt | None = Field(None, description="the hit's rank as shown, counting from 1; checked")


class UbiAttributesIn(_Open):
    object: UbiObjectIn | None = None
    position: UbiPositionIn | None = None


class UbiEventIn(_Open):
    action_name: PlainStr = Field(min_length=1, max_length=100, description="mapped by the ubi_actions setting")
    timestamp: datetime = Field(description="ISO 8601; without a zone it is taken as UTC")
    query_id: IdStr | None = Field(None, description="the search_id that POST /search answered")
    client_id: IdStr | None = Field(None, description="part of the event's identity; not stored")
    session_id: PlainStr | None = Field(None, description="ignored (flywheel keeps the search's own)")
    user_id: PlainStr | None = Field(None, description="ignored (flywheel keeps the search's own)")
    user_query: PlainStr | None = Field(None, description="ignored (flywheel logged the query it answered)")
    application: PlainStr | None = Field(None, description="ignored")
    message_type: PlainStr | None = Field(None, description="ignored")
    message: PlainStr | None = Field(None, description="ignored")
    event_attributes: UbiAttributesIn | None = None

    @field_validator("timestamp")
    @classmethod
    def _in_range(cls, value: datetime) -> datetime:
        try:
            return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)
        except OverflowError:
            raise ValueError("timestamp is out of range once converted to UTC") from None

    @property
    def object_id(self) -> str | None:
        """The object acted on, as text."""
        obj = self.event_attributes.object if self.event_attributes else None
        return None if obj is None or obj.object_id is None else str(obj.object_id)

    @property
    def ordinal(self) -> int | None:
        """The position it was shown at, if the client sent one."""
        position = self.event_attributes.position if self.event_attributes else None
        return position.ordinal if position is not None else None


def _shape(value: Any) -> str:
    """One event or an array of them: the branch to validate, so errors speak of one shape only."""
    return "many" if isinstance(value, list) else "one"


class UbiEventsIn(
    RootModel[
        Annotated[
            Annotated[list[UbiEventIn], Tag("many")] | Annotated[UbiEventIn, Tag("one")],
            Discriminator(_shape),
        ]
    ]
):
    """The body: one UBI event, or a JSON array of them."""

    @property
    def events(self) -> list[UbiEventIn]:
        """The events, one or many, in request order."""
        return self.root if isinstance(self.root, list) else [self.root]


class UbiQueryIn(_Open):
    query_id: IdStr = Field(min_length=1, description="the id the client's UBI events will name")
    user_query: PlainStr = Field(min_length=1, description="what the user asked")
    client_id: IdStr | None = Field(None, description="stored as the search's user_id")
    query_response_hit_ids: list[IdStr | StrictInt] | None = Field(
        None, description="the doc_ids of the hits shown, best first (an integer is read as its decimal text)"
    )
    query_response_object_ids: list[IdStr | StrictInt] | None = Field(
        None, description="the same, under the name some UBI writers use"
    )
    timestamp: Any = Field(None, description="ignored: flywheel orders searches by when it received them")
    query: Any = Field(None, description="ignored (the engine's own query DSL)")
    query_attributes: Any = Field(None, description="ignored")

    @property
    def hit_ids(self) -> list[str] | None:
        """The hits shown, as text, best first."""
        ids = self.query_response_hit_ids if self.query_response_hit_ids is not None else self.query_response_object_ids
        return None if ids is None else [str(i) for i in ids]


class UbiQueriesIn(
    RootModel[
        Annotated[
            Annotated[list[UbiQueryIn], Tag("many")] | Annotated[UbiQueryIn, Tag("one")],
            Discriminator(_shape),
        ]
    ]
):
    """The body of POST /ubi/queries: one UBI query record, or a JSON array of them."""

    @property
    def queries(self) -> list[UbiQueryIn]:
        """The queries, one or many, in request order."""
        return self.root if isinstance(self.root, list) else [self.root]


class UbiQueriesOut(BaseModel):
    stored: int = Field(description="searches logged with their hits")
    duplicates: int = Field(description="queries logged before with the same hits")


class UbiOut(BaseModel):
    accepted: int = Field(description="new feedback events stored")
    duplicates: int = Field(description="events stored before (the same event sent again)")
    ignored: int = Field(description="events whose action_name is not feedback (e.g. impression, view)")
    ignored_actions: dict[str, int] = Field(description="the ignored events by action_name")
