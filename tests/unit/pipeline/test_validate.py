"""parse_message: every bad message becomes a Rejection whose reason says what is wrong; it never raises."""

from __future__ import annotations

import json
import re
import sys
import uuid
from datetime import datetime
from typing import Any

import pytest

from schemas import ContentCreated, FeedbackReceived, TagCorrected
from tests.unit.factories import FIXED_ID, content_payload, correction_payload, feedback_payload, message
from worker.pipeline.validate import (
    UNWRITABLE_RAW,
    Accepted,
    RawMessage,
    Rejection,
    parse_message,
    raw_text,
    read_message,
)
from worker.settings import IngestSettings

LIMITS = IngestSettings()
SMALL = IngestSettings(max_text_chars=60, max_metadata_bytes=40, max_metadata_depth=3)


def nested(depth: int) -> dict[str, Any]:
    """A dict `depth` levels deep: nested(1) == {"a": 1}."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def reject(msg: RawMessage, limits: IngestSettings = SMALL) -> Rejection:
    result = parse_message(msg, limits)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    return result


BAD_MESSAGES = [
    pytest.param(message("this is not json"), r"^not JSON: Expecting value", id="not-json-string"),
    pytest.param(message("[1, 2]"), r"^event must be a JSON object, got list$", id="json-array"),
    pytest.param(message("42"), r"^event must be a JSON object, got int$", id="json-number"),
    pytest.param(message('"just a string"'), r"^event must be a JSON object, got str$", id="json-string-in-string"),
    pytest.param(message(None), r"^event must be a JSON object, got NoneType$", id="null"),
    pytest.param(message([content_payload()]), r"^event must be a JSON object, got list$", id="python-list"),
    pytest.param(
        message(content_payload(kind="survey.answered")),
        r"^unknown event kind 'survey.answered'; expected one of content.created, feedback.received, tag.corrected$",
        id="unknown-kind",
    ),
    pytest.param(message(content_payload(kind=None)), r"^unknown event kind None; expected one of", id="missing-kind"),
    pytest.param(message(content_payload(text=None)), r"^content\.created\.text: Field required$", id="missing-text"),
    pytest.param(message(content_payload(text="")), r"^text is empty$", id="empty-text"),
    pytest.param(message(feedback_payload(text=" \n\t ")), r"^text is empty$", id="whitespace-text"),
    pytest.param(
        message(content_payload(text="x" * 61)),
        r"^text has 61 characters, more than the limit of 60$",
        id="oversized-text",
    ),
    pytest.param(
        message(feedback_payload(rating="five")),
        r"^feedback\.received\.rating: Input should be a valid number",
        id="rating-not-a-number",
    ),
    pytest.param(
        message(content_payload(text=42)), r"^content\.created\.text: Input should be a valid string$", id="text-int"
    ),
    pytest.param(
        message(content_payload(metadata=["a"])),
        r"^content\.created\.metadata: Input should be a valid dictionary$",
        id="metadata-list",
    ),
    pytest.param(
        message(content_payload(clicks=12)),
        r"^content\.created\.clicks: Extra inputs are not permitted$",
        id="extra-field",
    ),
    pytest.param(
        message(content_payload(text="caf\udc80")), r"^text: invalid UTF-8 \(lone surrogate\)$", id="surrogate-text"
    ),
    pytest.param(
        message(content_payload(metadata={"\udc80": 1})),
        r"^metadata: invalid UTF-8 \(lone surrogate\)$",
        id="surrogate-metadata-key",
    ),
    pytest.param(
        message(content_payload(metadata={"tags": ["ok", "\udcff"]})),
        r"^metadata: tags: invalid UTF-8 \(lone surrogate\)$",
        id="surrogate-metadata-list-value",
    ),
    pytest.param(
        message('{"kind": "content.created", "text": "\\udc80"}'),
        r"^text: invalid UTF-8 \(lone surrogate\)$",
        id="surrogate-escape-in-json-string",
    ),
    pytest.param(
        message(content_payload(metadata=nested(6))), r"^metadata is nested deeper than 3 levels$", id="deep-metadata"
    ),
    pytest.param(message(content_payload(extra=nested(9))), r"^event is nested deeper than 5 levels$", id="deep-event"),
    pytest.param(
        message(content_payload(metadata={"blob": "y" * 40})),
        r"^metadata is 52 bytes as JSON \(UTF-8\), more than the limit of 40$",
        id="oversized-metadata",
    ),
    pytest.param(
        RawMessage("msg-1", (content_payload(), content_payload()), {}),
        r"^expected one positional argument \(the event\), got 2 args and kwargs \[\]$",
        id="two-args",
    ),
    pytest.param(
        RawMessage("msg-1", (), {"payload": content_payload()}),
        r"^expected one positional argument \(the event\), got 0 args and kwargs \['payload'\]$",
        id="kwarg-not-event",
    ),
    pytest.param(
        RawMessage("msg-1", (content_payload(),), {"event": content_payload()}),
        r"got 1 args and kwargs \['event'\]$",
        id="arg-and-kwarg",
    ),
    pytest.param(RawMessage("msg-1", (), {}), r"got 0 args and kwargs \[\]$", id="no-args"),
    pytest.param(
        message(content_payload(event_id="not-a-uuid")),
        r"^content\.created\.event_id: Input should be a valid UUID",
        id="invalid-event-id",
    ),
    pytest.param(
        message(content_payload(event_id=None)), r"^content\.created\.event_id: Field required$", id="missing-event-id"
    ),
    pytest.param(
        message(content_payload(metadata={"note": "a\x00b"})),
        r"^content\.created\.metadata: Value error, metadata contains a NUL character",
        id="nul-in-metadata",
    ),
    pytest.param(
        message(content_payload(text="a\x00b")),
        r"^content\.created\.text: Value error, text contains a NUL character",
        id="nul-in-text",
    ),
    pytest.param(
        message(content_payload(schema_version=2)),
        r"^content\.created\.schema_version: Input should be 1$",
        id="schema-version-2",
    ),
    pytest.param(
        message(json.dumps(feedback_payload(event_id=FIXED_ID, rating=float("nan")))),
        r"^feedback\.received\.rating: Input should be a finite number$",
        id="nan-rating-in-json",
    ),
    pytest.param(
        message(correction_payload(item={"kind": "campaign", "external_id": "c"})),
        r"^tag\.corrected\.item\.kind: Input should be 'content' or 'feedback'$",
        id="bad-item-kind",
    ),
]


@pytest.mark.parametrize(("msg", "reason"), BAD_MESSAGES)
def test_bad_messages_are_rejected_with_a_clear_reason(msg: RawMessage, reason: str) -> None:
    rejection = reject(msg)

    assert rejection.message_id == "msg-1"
    assert rejection.status == "invalid"
    assert re.search(reason, rejection.reason), f"{rejection.reason!r} does not match {reason!r}"


@pytest.mark.parametrize(("msg", "reason"), BAD_MESSAGES)
def test_a_rejections_raw_is_ascii_json_text(msg: RawMessage, reason: str) -> None:
    rejection = reject(msg)

    assert rejection.raw.isascii()
    json.loads(rejection.raw)  # parses back (NaN included, as Python writes it)


def test_metadata_size_counts_utf8_bytes_not_escaped_characters() -> None:
    """Japanese metadata of 9,012 UTF-8 bytes was refused as larger than 16,384: each character counted 6."""
    fits = content_payload(metadata={"note": "日本語のメモ"})  # 30 bytes in UTF-8, 48 as escaped ASCII
    assert isinstance(parse_message(message(fits), SMALL), Accepted)
    too_big = content_payload(metadata={"note": "語" * 12})  # 48 bytes in UTF-8
    assert reject(message(too_big)).reason == "metadata is 48 bytes as JSON (UTF-8), more than the limit of 40"


def test_raw_keeps_the_payload_and_escapes_nul_and_surrogates() -> None:
    payload = content_payload(text="a\x00b\udc80", clicks=1)

    rejection = reject(message(payload))

    assert "\\u0000" in rejection.raw and "\\udc80" in rejection.raw
    assert json.loads(rejection.raw) == payload


def test_raw_of_a_json_string_is_that_string_as_json() -> None:
    rejection = reject(message("not json {"))

    assert json.loads(rejection.raw) == "not json {"


def test_raw_of_a_message_with_wrong_arguments_holds_args_and_kwargs() -> None:
    rejection = reject(RawMessage("msg-1", ("a", "b"), {"x": 1}))

    assert json.loads(rejection.raw) == [["a", "b"], {"x": 1}]


def test_a_rejection_keeps_the_event_id_and_kind_where_readable() -> None:
    rejection = reject(message(content_payload(event_id=FIXED_ID, clicks=1)))

    assert rejection.event_id == uuid.UUID(FIXED_ID)
    assert rejection.kind == "content.created"


def test_a_rejected_json_string_still_yields_its_event_id_and_kind() -> None:
    payload = json.dumps(feedback_payload(event_id=FIXED_ID, rating="five"))

    rejection = reject(message(payload))

    assert (rejection.event_id, rejection.kind) == (uuid.UUID(FIXED_ID), "feedback.received")


def test_an_unknown_kind_is_kept_but_an_unreadable_event_id_is_not() -> None:
    rejection = reject(message(content_payload(kind="survey.answered", event_id="nope")))

    assert (rejection.event_id, rejection.kind) == (None, "survey.answered")


@pytest.mark.parametrize("kind", [42, "bad\nkind", ["content.created"]])
def test_a_kind_that_is_not_printable_text_is_not_kept(kind: Any) -> None:
    assert reject(message(content_payload(kind=kind))).kind is None


def test_a_very_long_kind_is_cut_to_fit_its_column() -> None:
    assert reject(message(content_payload(kind="k" * 500))).kind == "k" * 64


@pytest.mark.parametrize("msg", [message("not json"), message([1]), RawMessage("msg-1", (1, 2), {})])
def test_nothing_is_salvaged_when_the_payload_is_not_an_object(msg: RawMessage) -> None:
    rejection = reject(msg)

    assert (rejection.event_id, rejection.kind) == (None, None)


def test_a_valid_event_is_accepted() -> None:
    payload = content_payload(event_id=FIXED_ID)

    result = parse_message(message(payload, "m-7"), LIMITS)

    assert isinstance(result, Accepted)
    assert result.message_id == "m-7"
    assert isinstance(result.event, ContentCreated)
    assert result.event.event_id == uuid.UUID(FIXED_ID)


def test_a_json_string_holding_a_valid_event_is_accepted() -> None:
    result = parse_message(message(json.dumps(feedback_payload(text="Great support"))), LIMITS)

    assert isinstance(result, Accepted)
    assert isinstance(result.event, FeedbackReceived)
    assert result.event.text == "Great support"


def test_the_event_keyword_argument_is_accepted() -> None:
    result = parse_message(RawMessage("msg-1", (), {"event": correction_payload()}), LIMITS)

    assert isinstance(result, Accepted)
    assert isinstance(result.event, TagCorrected)


def test_text_at_the_limit_and_metadata_within_its_depth_are_accepted() -> None:
    payload = content_payload(text="x" * 60, metadata=nested(3))

    result = parse_message(message(payload), IngestSettings(max_text_chars=60, max_metadata_depth=3))

    assert isinstance(result, Accepted)


def test_only_the_first_three_errors_are_named() -> None:
    payload = {"kind": "content.created", "a": 1, "b": 2, "c": 3, "d": 4, "e": 5}

    reason = reject(message(payload), LIMITS).reason

    assert reason.count(";") == 2
    assert reason.endswith("(+5 more)")  # event_id, content_id and text missing; five extras


def test_raw_text_never_raises_on_what_json_cannot_write() -> None:
    circular: list[Any] = []
    circular.append(circular)

    assert raw_text({"when": datetime(2024, 1, 1)}) == '{"when": "datetime.datetime(2024, 1, 1, 0, 0)"}'
    assert raw_text(circular) == "[[...]]"


@pytest.mark.parametrize("value", [datetime(2024, 1, 1), uuid.UUID(FIXED_ID)], ids=["datetime", "uuid"])
def test_metadata_holding_objects_kombu_decodes_does_not_raise(value: Any) -> None:
    result = parse_message(message(content_payload(metadata={"published": value})), LIMITS)

    assert isinstance(result, Accepted | Rejection)


def test_deeply_nested_json_text_is_rejected_not_raised() -> None:
    rejection = reject(message("[" * 100_000 + "]" * 100_000))

    assert rejection.reason.startswith("not JSON")


def test_metadata_one_level_deeper_than_the_limit_is_rejected() -> None:
    rejection = reject(message(content_payload(metadata=nested(4))))  # SMALL allows 3 levels

    assert rejection.reason == "metadata is nested deeper than 3 levels"


@pytest.mark.parametrize("metadata", [{"a": [[["x"]]]}, {"a": [{"b": {"c": 1}}]}], ids=["lists", "mixed"])
def test_lists_count_as_levels_of_metadata(metadata: dict[str, Any]) -> None:
    assert reject(message(content_payload(metadata=metadata))).reason == "metadata is nested deeper than 3 levels"


@pytest.mark.parametrize(
    "payload",
    [content_payload(**{"bad\x00key": 1}), content_payload(event_id="\x00" + FIXED_ID[1:])],
    ids=["nul-in-unknown-key", "nul-in-event-id"],
)
def test_a_reason_never_holds_a_nul(payload: dict[str, Any]) -> None:
    rejection = reject(message(payload))

    assert "\x00" not in rejection.reason


def too_deep_for_repr() -> list[Any]:
    """A list nested deeper than the interpreter's recursion limit: neither `json.dumps` nor `repr` can write it."""
    value: list[Any] = []
    for _ in range(sys.getrecursionlimit() + 100):
        value = [value]
    return value


def test_raw_text_of_a_payload_even_repr_cannot_write_is_a_placeholder() -> None:
    assert raw_text(too_deep_for_repr()) == UNWRITABLE_RAW
    assert json.loads(UNWRITABLE_RAW)  # still JSON text, like every `raw`


def test_a_payload_nested_too_deep_to_write_out_is_still_rejected() -> None:
    rejection = reject(message(content_payload(metadata={"x": too_deep_for_repr()})))

    assert rejection.reason == "metadata is nested deeper than 3 levels"
    assert rejection.raw == UNWRITABLE_RAW


@pytest.mark.parametrize(
    ("args", "kwargs", "reason"),
    [
        pytest.param(5, {}, r"^message args must be a list \(holding the event\), got int;", id="args-int"),
        pytest.param("abc", {}, r"^message args must be a list .*, got str;", id="args-string"),
        pytest.param([], ["x"], r"^message kwargs must be an object, got list;", id="kwargs-list"),
        pytest.param([], [["event", 1]], r"^message kwargs must be an object, got list;", id="kwargs-pairs"),
        pytest.param({"kind": "x"}, None, r"^message args must be a list .*, got dict;", id="args-object"),
    ],
)
def test_a_body_whose_args_or_kwargs_have_the_wrong_shape_is_rejected(args: Any, kwargs: Any, reason: str) -> None:
    rejection = reject(read_message("msg-1", args, kwargs))

    assert rejection.message_id == "msg-1"
    assert re.search(reason, rejection.reason), rejection.reason
    assert json.loads(rejection.raw) == [args, kwargs]  # the body as sent, not a coerced copy


def test_a_malformed_message_does_not_take_the_rest_of_its_batch_with_it() -> None:
    bodies = [("bad-args", 5, {}), ("good", [content_payload()], None), ("bad-kwargs", [], ["x"])]

    results = [parse_message(read_message(mid, args, kwargs), LIMITS) for mid, args, kwargs in bodies]

    assert [(type(r).__name__, r.message_id) for r in results] == [
        ("Rejection", "bad-args"),
        ("Accepted", "good"),
        ("Rejection", "bad-kwargs"),
    ]


def test_read_message_keeps_a_well_formed_body_as_the_task_received_it() -> None:
    event = content_payload()

    assert read_message(123, [event], None) == RawMessage("123", (event,), {})
    assert read_message("m", None, {"event": event}) == RawMessage("m", (), {"event": event})
