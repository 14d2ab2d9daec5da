"""The publisher: JSON Lines become events with a kind, a stable event_id and a time; bad lines pass through."""

from __future__ import annotations

import io
import uuid
from datetime import datetime
from typing import Any

import pytest

from schemas import ContentCreated
from tests.unit.factories import FIXED_ID, message
from worker.pipeline.batch import content_hash, sort_batch
from worker.pipeline.validate import Accepted, parse_message
from worker.publish import read_jsonl, stable_event_id, to_event
from worker.settings import IngestSettings

CONTENT = {"content_id": "blog-001", "text": "Deliverability basics", "title": "Guide"}
FEEDBACK = {"feedback_id": "fb-1", "text": "Too much spam", "rating": 2}


@pytest.mark.parametrize(
    ("record", "flag", "kind"),
    [
        (CONTENT, None, "content.created"),
        (FEEDBACK, None, "feedback.received"),
        ({"text": "no id"}, "content", "content.created"),
        ({"text": "no id"}, "feedback", "feedback.received"),
        (CONTENT, "feedback", "feedback.received"),  # the flag wins over the id field
        ({**FEEDBACK, "kind": "content.created"}, "feedback", "content.created"),  # an explicit kind wins
    ],
)
def test_kind_comes_from_the_record_the_flag_or_the_id_field(record: dict, flag: str | None, kind: str) -> None:
    assert to_event(record, flag)["kind"] == kind


def test_a_record_with_no_kind_and_no_id_field_gets_no_kind_and_no_event_id() -> None:
    event = to_event({"text": "orphan"})

    assert "kind" not in event
    assert "event_id" not in event
    assert "occurred_at" in event


def test_the_event_id_is_a_stable_uuid_from_the_content() -> None:
    first, second = to_event(dict(CONTENT)), to_event(dict(CONTENT))

    assert first["event_id"] == second["event_id"]
    assert uuid.UUID(first["event_id"]).version == 5
    assert first["event_id"] == stable_event_id({**CONTENT, "kind": "content.created"})


@pytest.mark.parametrize(
    "change",
    [{"text": "Deliverability basics, revised"}, {"content_id": "blog-002"}],
    ids=["text", "external_id"],
)
def test_a_different_text_or_id_gives_a_different_event_id(change: dict) -> None:
    assert to_event(CONTENT)["event_id"] != to_event({**CONTENT, **change})["event_id"]


def test_a_record_reverted_at_a_later_time_gets_a_new_id() -> None:
    """Its time used to be left out, so the revert got the first version's id and the worker skipped it."""
    first = to_event({**CONTENT, "occurred_at": "2026-01-01T00:00:00Z"})
    reverted = to_event({**CONTENT, "occurred_at": "2026-03-01T00:00:00Z"})

    assert first["event_id"] != reverted["event_id"]
    assert first["event_id"] == to_event({**CONTENT, "occurred_at": "2026-01-01T00:00:00Z"})["event_id"]


def test_the_same_words_as_content_and_as_feedback_get_different_ids() -> None:
    words = {"text": "same words"}

    assert to_event({**words, "content_id": "x"})["event_id"] != to_event({**words, "feedback_id": "x"})["event_id"]


def test_an_explicit_event_id_and_occurred_at_are_kept() -> None:
    event = to_event({**CONTENT, "event_id": FIXED_ID, "occurred_at": "2024-01-01T00:00:00Z"})

    assert event["event_id"] == FIXED_ID
    assert event["occurred_at"] == "2024-01-01T00:00:00Z"


def test_occurred_at_is_filled_with_an_aware_time() -> None:
    assert datetime.fromisoformat(to_event(CONTENT)["occurred_at"]).tzinfo is not None


def test_the_record_itself_is_not_changed() -> None:
    record = dict(CONTENT)

    to_event(record, "content")

    assert record == CONTENT


@pytest.mark.parametrize("record", ["not json at all", [1, 2], 42, None])
def test_anything_but_an_object_passes_through_untouched(record: Any) -> None:
    assert to_event(record, "content") is record


def test_a_text_with_lone_surrogates_still_gets_an_id() -> None:
    # publish reads files with errors="surrogateescape"; the worker, not the publisher, refuses such text.
    event = to_event({"content_id": "c", "text": "caf\udce9"})

    assert uuid.UUID(event["event_id"])


def test_a_published_record_is_accepted_by_the_worker() -> None:
    result = parse_message(message(to_event(CONTENT)), IngestSettings())

    assert isinstance(result, Accepted)
    assert isinstance(result.event, ContentCreated)
    assert result.event.title == "Guide"


def test_read_jsonl_parses_lines_skips_blank_ones_and_passes_bad_ones_raw() -> None:
    lines = io.StringIO('{"content_id": "a", "text": "t"}\n\n   \nthis line is not JSON at all\n[1, 2]\n{"broken": \n')

    assert list(read_jsonl(lines)) == [
        {"content_id": "a", "text": "t"},
        "this line is not JSON at all",
        [1, 2],
        '{"broken": ',
    ]


def test_read_jsonl_handles_a_last_line_without_newline() -> None:
    assert list(read_jsonl(["not json"])) == ["not json"]


def test_republishing_an_edited_record_is_not_rejected_as_an_id_reuse() -> None:
    limits = IngestSettings()
    original = parse_message(message(to_event(CONTENT)), limits)
    edited = parse_message(message(to_event({**CONTENT, "title": "Guide (2nd edition)"})), limits)
    assert isinstance(original, Accepted) and isinstance(edited, Accepted)

    out = sort_batch([edited], stored={original.event.event_id: content_hash(original.event)})

    assert out.rejections == []
