"""Pydantic v2 models of the events producers send."""

from schemas.events import (
    EVENT_KINDS,
    SCHEMA_VERSION,
    ContentCreated,
    Event,
    FeedbackReceived,
    ItemEvent,
    ItemRef,
    TagCorrected,
)

__all__ = [
    "EVENT_KINDS",
    "SCHEMA_VERSION",
    "ContentCreated",
    "Event",
    "FeedbackReceived",
    "ItemEvent",
    "ItemRef",
    "TagCorrected",
]
