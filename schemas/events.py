"""The events producers send, one frozen Pydantic model per kind.

A producer sends one JSON object per Celery message to the task `tagworker.ingest`; its `kind` field picks
the model. Unknown fields are refused (`extra="forbid"`), so a typo never passes as data.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

SCHEMA_VERSION: Literal[1] = 1
MAX_ID_CHARS = 256
MAX_FIELD_CHARS = 2048

NUL_REASON = "contains a NUL character, which PostgreSQL cannot store"


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError(f"text {NUL_REASON}")
    return value


def _jsonable(value: Any) -> Any:
    """Objects Celery's JSON decoder revives (datetime, UUID, Decimal) become strings again."""
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (*_strings(k), *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def _json_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata as plain JSON that jsonb stores: no NaN or Infinity, no NUL, revived objects as strings."""
    try:
        plain = json.loads(json.dumps(value, default=_jsonable, allow_nan=False))
    except ValueError as exc:
        raise ValueError(f"metadata is not plain JSON ({exc}); NaN and Infinity are not allowed") from exc
    if any("\x00" in s for s in _strings(plain)):
        raise ValueError(f"metadata {NUL_REASON}")
    return plain  # type: ignore[no-any-return]


ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_FIELD_CHARS),
    AfterValidator(_no_nul),
]
ExternalId = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_no_nul)
]


def _aware(value: datetime) -> datetime:
    """A time without an offset is read as UTC: naive and aware times cannot be compared (or sorted) together."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None or value.utcoffset() is None else value


BodyText = Annotated[str, StringConstraints(min_length=1), AfterValidator(_no_nul)]
Timestamp = Annotated[datetime, AfterValidator(_aware)]
Metadata = Annotated[dict[str, Any], AfterValidator(_json_metadata)]


class EventBase(BaseModel):
    """Fields every event carries."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    event_id: uuid.UUID
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: Timestamp = Field(default_factory=lambda: datetime.now(UTC))


class ContentCreated(EventBase):
    """A piece of marketing content: blog post, ad copy, email, campaign brief."""

    kind: Literal["content.created"] = "content.created"
    content_id: ExternalId
    text: BodyText
    title: ShortText | None = None
    url: ShortText | None = None
    channel: ShortText | None = None
    campaign: ShortText | None = None
    language: Annotated[str, StringConstraints(pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$")] | None = None
    metadata: Metadata = Field(default_factory=dict)

    @property
    def external_id(self) -> str:
        return self.content_id

    @property
    def item_kind(self) -> Literal["content"]:
        return "content"


class FeedbackReceived(EventBase):
    """A customer's words: a review, a survey answer, a support message."""

    kind: Literal["feedback.received"] = "feedback.received"
    feedback_id: ExternalId
    text: BodyText
    source: Literal["survey", "review", "support", "social"] | None = None
    rating: Annotated[float, Field(ge=0, le=10, allow_inf_nan=False)] | None = None
    customer_ref: ShortText | None = None
    metadata: Metadata = Field(default_factory=dict)

    @property
    def external_id(self) -> str:
        return self.feedback_id

    @property
    def item_kind(self) -> Literal["feedback"]:
        return "feedback"


class ItemRef(BaseModel):
    """Names a stored item by its kind and the producer's id."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["content", "feedback"]
    external_id: ExternalId


class TagCorrected(EventBase):
    """A person's decision about an item's tags; stored now, acted on by the tagger."""

    kind: Literal["tag.corrected"] = "tag.corrected"
    item: ItemRef
    added: list[ExternalId] = Field(default_factory=list, max_length=100)
    removed: list[ExternalId] = Field(default_factory=list, max_length=100)
    actor: ShortText
    corrected_at: Timestamp = Field(default_factory=lambda: datetime.now(UTC))


ItemEvent = ContentCreated | FeedbackReceived
Event = Annotated[ContentCreated | FeedbackReceived | TagCorrected, Field(discriminator="kind")]
EVENT_KINDS: tuple[str, ...] = ("content.created", "feedback.received", "tag.corrected")
