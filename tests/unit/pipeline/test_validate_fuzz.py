"""Property test: whatever a producer sends, validation returns an event or a reason, and never raises."""

from __future__ import annotations

import json
import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.pipeline.validate import Accepted, RawMessage, Rejection, parse_message, read_message
from worker.settings import IngestSettings

LIMITS = IngestSettings(max_text_chars=2000, max_metadata_bytes=2048, max_metadata_depth=4)
# Includes lone surrogates (invalid UTF-8 once encoded), NUL and other control characters.
any_text = st.text(alphabet=st.characters(codec=None, exclude_categories=()), max_size=60) | st.sampled_from(
    ["", " ", "\x00", "\udc80", "a" * 2001, "ok text"]
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | any_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=20,
)
kinds = st.sampled_from(["content.created", "feedback.received", "tag.corrected", "survey", ""]) | any_text


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, object]:
    event: dict[str, object] = {
        "kind": draw(kinds),
        "event_id": draw(st.sampled_from([str(uuid.uuid4()), "not-a-uuid", ""]) | any_text),
        "text": draw(any_text),
        "content_id": draw(any_text),
        "feedback_id": draw(any_text),
        "metadata": draw(json_values),
        "rating": draw(json_values),
        "schema_version": draw(st.sampled_from([1, 2, "1", None])),
    }
    for key in draw(st.lists(st.sampled_from(list(event)), max_size=4)):
        event.pop(key, None)
    event.update(draw(st.dictionaries(any_text, json_values, max_size=2)))
    return event


payloads = near_valid_events() | json_values | any_text.map(lambda t: t) | near_valid_events().map(json.dumps)


# 1,000 here (about 8 s); the chaos suite sends another 2,000 generated payloads through a real worker.
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=payloads)
def test_every_payload_is_accepted_or_rejected_with_a_reason(payload: object) -> None:
    result = parse_message(RawMessage("m-1", (payload,), {}), LIMITS)
    if isinstance(result, Rejection):
        assert result.reason.strip()
        assert "\x00" not in result.reason
        result.raw.encode("ascii")  # storable as TEXT whatever the payload held
    else:
        assert isinstance(result, Accepted)
        dumped = result.event.model_dump_json()
        dumped.encode("utf-8")  # no lone surrogates reach PostgreSQL
        assert "\\u0000" not in dumped


# A hand-made Celery body may hold anything JSON where args and kwargs belong.
@settings(max_examples=300, deadline=None)
@given(args=json_values | st.lists(payloads, max_size=2), kwargs=json_values | st.dictionaries(any_text, payloads))
def test_any_args_and_kwargs_give_an_event_or_a_reason(args: object, kwargs: object) -> None:
    result = parse_message(read_message("m-1", args, kwargs), LIMITS)

    assert result.message_id == "m-1"
    if isinstance(result, Rejection):
        assert result.reason.strip()
        result.raw.encode("ascii")
