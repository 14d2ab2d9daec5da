"""Bad-input fuzz: hypothesis generates producer payloads, from valid events to every kind of broken one.

hypothesis is a test extra, imported only here, so the worker never needs it. Ids are placeholders in the
strategies and filled in afterwards (`realize`): hypothesis likes to repeat simple values, and a repeated
event id must be a deliberate case (a resend, or a reused id with other content), not an accident.
"""

from __future__ import annotations

import copy
import json
import uuid
from datetime import timedelta
from typing import Any

from worker.chaos.ledger import EPOCH

FRESH_ID = "<fresh-event-id>"
REUSED_ID = "<reused-event-id>"  # the previous event's id, with other content: must be rejected
FRESH_REF = "<fresh-external-id>"
RESEND = "<resend-previous-payload>"  # the previous payload again, byte for byte: stored once
OCCURRED = "<occurred-at>"
SQL_TEXTS = [
    "'); DROP TABLE items; --",
    "Robert'); DELETE FROM embeddings WHERE ('1'='1",
    "%s %(text)s :text $1 \\x00? -- ; /* */",
]


def strategy(max_text_chars: int):  # type: ignore[no-untyped-def]
    """Payloads: valid events, each category of invalid one, and non-objects."""
    from hypothesis import strategies as st

    words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=80)
    texts = words.filter(str.strip) | st.sampled_from(SQL_TEXTS)
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
    wrong_types = st.integers() | st.floats() | st.booleans() | st.lists(scalars, max_size=3) | st.none()

    @st.composite
    def event(draw: Any) -> dict[str, Any]:
        kind = draw(st.sampled_from(["content.created", "feedback.received"]))
        ref = "content_id" if kind == "content.created" else "feedback_id"
        return {"kind": kind, "event_id": FRESH_ID, ref: FRESH_REF, "occurred_at": OCCURRED, "text": draw(texts)}

    def nested(depth: int) -> dict[str, Any]:
        value: dict[str, Any] = {"leaf": 1}
        for _ in range(depth):
            value = {"n": value}
        return value

    def with_(key: str, values: Any) -> Any:
        return st.tuples(event(), values).map(lambda pair: {**pair[0], key: pair[1]})

    def without(keys: list[str]) -> Any:
        return st.tuples(event(), st.sampled_from(keys)).map(lambda p: {k: v for k, v in p[0].items() if k != p[1]})

    control = st.text(st.characters(categories=["Cc"]), min_size=1, max_size=5)
    surrogate = st.characters(categories=["Cs"])
    return st.one_of(
        event(),
        st.tuples(event(), st.sampled_from(["text", "event_id", "kind", "metadata", "schema_version"]), wrong_types)
        .map(lambda p: {**p[0], p[1]: p[2]}),
        st.tuples(event(), st.integers(1, 50)).map(lambda p: {**p[0], "text": "x" * (max_text_chars + p[1])}),
        st.tuples(event(), control).map(lambda p: {**p[0], "text": p[0]["text"] + p[1]}),
        st.tuples(event(), surrogate).map(lambda p: {**p[0], "text": p[0]["text"] + p[1]}),
        st.tuples(event(), surrogate).map(lambda p: {**p[0], "metadata": {p[1]: "key is invalid UTF-8"}}),
        st.tuples(event(), st.integers(9, 40)).map(lambda p: {**p[0], "metadata": nested(p[1])}),
        st.tuples(event(), st.dictionaries(st.text(min_size=1, max_size=12), scalars, min_size=1, max_size=3))
        .map(lambda p: {**p[1], **p[0]}),
        without(["event_id", "text", "kind", "content_id", "feedback_id"]),
        event().map(lambda e: {**e, "event_id": REUSED_ID, "text": e["text"] + " (other content)"}),
        st.just(RESEND),
        with_("schema_version", st.sampled_from([0, 2, -1, "1", None, 1.5])),
        st.lists(scalars, max_size=4) | scalars,
        st.sampled_from(["{not json", "[1, 2", ""]),
        event().map(json.dumps),
    )  # fmt: skip


def realize(payloads: list[Any]) -> list[Any]:
    """Fill in ids and times: fresh ones, the previous id for `REUSED_ID`, the previous payload for `RESEND`."""
    out: list[Any] = []
    last_id: str | None = None
    last_event: Any = None
    for i, payload in enumerate(payloads):
        if payload == RESEND:
            payload = copy.deepcopy(last_event) if last_event is not None else RESEND
        elif isinstance(payload, str) and FRESH_ID in payload:  # a JSON-encoded event, or a bare string
            payload = _fill_encoded(payload, i, last_id)
        elif isinstance(payload, dict):
            payload = _fill(payload, i, last_id)
            if isinstance(payload.get("event_id"), str):
                last_id, last_event = payload["event_id"], payload
        out.append(payload)
    return out


def _fill_encoded(payload: str, i: int, last_id: str | None) -> str:
    """A JSON-encoded event with its placeholders filled; any other string as it is. Hypothesis also draws
    the placeholder itself as a plain text: it mines string constants from the code it tests."""
    try:
        decoded = json.loads(payload)
    except ValueError:
        return payload
    return json.dumps(_fill(decoded, i, last_id)) if isinstance(decoded, dict) else payload


def _fill(event: dict[str, Any], i: int, last_id: str | None) -> dict[str, Any]:
    event = dict(event)
    for key, value in list(event.items()):
        if value == FRESH_ID:
            event[key] = str(uuid.uuid4())
        elif value == REUSED_ID:
            event[key] = last_id or str(uuid.uuid4())
        elif value == FRESH_REF:
            event[key] = f"fuzz-{uuid.uuid4().hex[:16]}"
        elif value == OCCURRED:
            event[key] = (EPOCH + timedelta(seconds=i)).isoformat()
    return event


def generate(n: int, *, max_text_chars: int) -> list[Any]:
    """At least `n` payloads drawn by hypothesis (its generate phase only: nothing fails, so nothing shrinks)."""
    from hypothesis import HealthCheck, Phase, given, settings

    drawn: list[Any] = []

    @settings(max_examples=n, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(strategy(max_text_chars))
    def collect(payload: Any) -> None:
        drawn.append(payload)

    while len(drawn) < n:
        collect()
    return realize(drawn)
