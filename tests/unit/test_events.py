"""The event schemas: what a producer may send, and what is refused with which message."""

from __future__ import annotations

import uuid
from datetime import datetime

import pytest
from pydantic import ValidationError

from schemas import SCHEMA_VERSION, ContentCreated, FeedbackReceived, ItemRef, TagCorrected
from tests.unit.factories import EVENT_ADAPTER, content_payload, correction_payload, feedback_payload


def parse(payload: dict) -> ContentCreated | FeedbackReceived | TagCorrected:
    return EVENT_ADAPTER.validate_python(payload)


def test_content_created_parses_with_its_fields() -> None:
    payload = content_payload(content_id="  blog-001  ", url="https://example.com/p", campaign="spring")
    event = parse(payload)

    assert isinstance(event, ContentCreated)
    assert event.event_id == uuid.UUID(payload["event_id"])
    assert event.schema_version == SCHEMA_VERSION == 1
    assert event.external_id == "blog-001"  # stripped
    assert event.item_kind == "content"
    assert event.metadata == {"author": "sam"}
    assert event.occurred_at.tzinfo is not None


def test_feedback_received_parses_with_its_fields() -> None:
    event = parse(feedback_payload(rating="7.5", customer_ref="cust-1"))

    assert isinstance(event, FeedbackReceived)
    assert event.external_id == "fb-0001"
    assert event.item_kind == "feedback"
    assert event.rating == 7.5
    assert event.source == "support"
    assert event.metadata == {}


def test_tag_corrected_parses_with_its_item_ref() -> None:
    event = parse(correction_payload(corrected_at="2024-05-01T12:00:00Z"))

    assert isinstance(event, TagCorrected)
    assert event.item == ItemRef(kind="content", external_id="blog-001")
    assert event.added == ["deliverability"]
    assert event.removed == ["pricing"]
    assert event.corrected_at == datetime.fromisoformat("2024-05-01T12:00:00+00:00")


def test_occurred_at_from_the_producer_is_kept() -> None:
    event = parse(content_payload(occurred_at="2024-01-02T03:04:05+02:00"))

    assert event.occurred_at == datetime.fromisoformat("2024-01-02T03:04:05+02:00")


@pytest.mark.parametrize(("make", "field"), [(content_payload, "occurred_at"), (correction_payload, "corrected_at")])
def test_a_time_without_an_offset_is_read_as_utc(make, field) -> None:
    """A naive and an aware time in one batch could not be sorted (the batch failed with a TypeError)."""
    naive = parse(make(**{field: "2024-01-02T03:04:05"}))
    aware = parse(make(**{field: "2024-01-02T05:04:05+02:00"}))

    assert getattr(naive, field) == datetime.fromisoformat("2024-01-02T03:04:05+00:00") == getattr(aware, field)
    assert sorted([getattr(naive, field), getattr(aware, field)])


@pytest.mark.parametrize("make", [content_payload, feedback_payload, correction_payload])
def test_an_unknown_field_is_refused(make) -> None:
    with pytest.raises(ValidationError, match=r"clicks\s+Extra inputs are not permitted"):
        parse(make(clicks=12))


def test_an_unknown_field_in_an_item_ref_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"item\.id\s+Extra inputs are not permitted"):
        parse(correction_payload(item={"kind": "content", "external_id": "x", "id": 3}))


def test_events_are_frozen() -> None:
    event = parse(content_payload())

    with pytest.raises(ValidationError, match="Instance is frozen"):
        event.text = "changed"  # type: ignore[misc]


@pytest.mark.parametrize("version", [0, 2, "1", None])
def test_a_schema_version_other_than_1_is_refused(version) -> None:
    payload = content_payload()
    payload["schema_version"] = version

    with pytest.raises(ValidationError, match=r"schema_version\s+Input should be 1"):
        parse(payload)


def test_schema_version_1_is_accepted() -> None:
    assert parse(content_payload(schema_version=1)).schema_version == 1


@pytest.mark.parametrize("make", [content_payload, feedback_payload])
def test_nul_in_text_is_refused(make) -> None:
    with pytest.raises(ValidationError, match="text contains a NUL character, which PostgreSQL cannot store"):
        parse(make(text="before\x00after"))


@pytest.mark.parametrize("metadata", [{"note": "a\x00b"}, {"a\x00b": 1}, {"deep": [{"x": "\x00"}]}])
def test_nul_in_metadata_is_refused(metadata) -> None:
    with pytest.raises(ValidationError, match="metadata contains a NUL character"):
        parse(content_payload(metadata=metadata))


def test_empty_text_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"text\s+String should have at least 1 character"):
        parse(content_payload(text=""))


@pytest.mark.parametrize("rating", [-0.1, 10.01, 11, float("nan"), float("inf"), float("-inf")])
def test_a_rating_out_of_range_or_not_finite_is_refused(rating) -> None:
    with pytest.raises(ValidationError, match=r"rating\s+Input should be (greater|less|a finite number)"):
        parse(feedback_payload(rating=rating))


@pytest.mark.parametrize("rating", [0, 10, 4.5])
def test_a_rating_from_0_to_10_is_accepted(rating) -> None:
    assert parse(feedback_payload(rating=rating)).rating == rating


@pytest.mark.parametrize("language", ["en", "eng", "en-US", "pt-BR", "zh-Hant", "de-1996"])
def test_language_tags_that_match_are_accepted(language) -> None:
    assert parse(content_payload(language=language)).language == language


@pytest.mark.parametrize("language", ["e", "english", "en_US", "en-", "12", "en-US-x", "en-toolongtag"])
def test_language_tags_that_do_not_match_are_refused(language) -> None:
    with pytest.raises(ValidationError, match=r"language\s+String should match pattern"):
        parse(content_payload(language=language))


@pytest.mark.parametrize("source", ["email", "Survey", ""])
def test_an_unknown_feedback_source_is_refused(source) -> None:
    with pytest.raises(ValidationError, match=r"source\s+Input should be 'survey', 'review', 'support' or 'social'"):
        parse(feedback_payload(source=source))


def test_a_blank_external_id_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"content_id\s+String should have at least 1 character"):
        parse(content_payload(content_id="   "))


def test_more_than_100_tags_in_a_correction_are_refused() -> None:
    with pytest.raises(ValidationError, match=r"added\s+List should have at most 100 items"):
        parse(correction_payload(added=[f"tag-{i}" for i in range(101)]))


@pytest.mark.parametrize(
    "payload",
    [
        content_payload(title="Spring\x00sale"),
        content_payload(content_id="blog\x00001"),
        feedback_payload(customer_ref="cust\x001"),
        correction_payload(actor="ed\x00itor"),
        correction_payload(added=["deliver\x00ability"]),
    ],
    ids=["title", "content_id", "customer_ref", "actor", "added-tag"],
)
def test_nul_in_any_short_text_field_is_refused(payload) -> None:
    with pytest.raises(ValidationError, match="NUL"):
        parse(payload)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_numbers_in_metadata_are_refused(value) -> None:
    with pytest.raises(ValidationError, match="metadata"):
        parse(content_payload(metadata={"score": value}))


def test_a_literal_backslash_u0000_in_metadata_is_not_a_nul() -> None:
    event = parse(content_payload(metadata={"regex": "\\u0000"}))

    assert event.metadata == {"regex": "\\u0000"}
