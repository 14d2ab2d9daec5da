"""The chaos checker's verdicts, on hand-made ledgers and database findings (no servers)."""

from __future__ import annotations

import json
from datetime import datetime

from worker.chaos.checker import Found, classify
from worker.chaos.ledger import Sent, describe, payload_hash
from worker.chaos.payloads import FRESH_ID, RESEND, REUSED_ID, realize

EVENT = {"kind": "feedback.received", "event_id": "0b6f3c52-6a43-4c1e-9d0e-2f8a7b51c3d4", "feedback_id": "fb-1",
         "occurred_at": "2026-03-01T10:00:00+00:00", "text": "hello"}  # fmt: skip
STORED_AT = datetime.fromisoformat("2026-03-02T10:00:00+00:00")


def found(**kwargs) -> Found:  # type: ignore[no-untyped-def]
    return Found(**{"items": {}, "by_ref": {}, "corrections": set(), "rejected": {}, **kwargs})


def test_a_message_neither_stored_nor_rejected_is_lost() -> None:
    counts = classify([describe("m1", EVENT)], found())
    assert (counts.sent, counts.stored, counts.rejected, counts.lost) == (1, 0, 0, 1)


def test_stored_rejected_and_superseded_messages_are_accounted_for() -> None:
    older = dict(EVENT, event_id="5d8a1b7e-0000-4000-8000-000000000001", feedback_id="fb-2")
    entries = [describe("m1", EVENT), describe("m2", "{not json"), describe("m3", older)]
    counts = classify(entries, found(items={EVENT["event_id"]: STORED_AT}, by_ref={("feedback", "fb-2"): STORED_AT},
                                     rejected={"m2": ("invalid", "not JSON")}))  # fmt: skip
    assert (counts.stored, counts.rejected, counts.lost, counts.duplicate_effects) == (2, 1, 0, 0)


def test_an_event_recorded_as_failed_and_also_stored_is_a_duplicate_effect() -> None:
    counts = classify([describe("m1", EVENT)], found(items={EVENT["event_id"]: STORED_AT},
                                                     rejected={"m1": ("failed", "not stored")}))  # fmt: skip
    assert counts.duplicate_effects == 1
    reused = [describe("m1", EVENT), describe("m2", dict(EVENT, text="other"))]
    counts = classify(reused, found(items={EVENT["event_id"]: STORED_AT}, rejected={"m2": ("failed", "not stored")}))
    assert counts.duplicate_effects == 0, "a failed reuse of the id for other content was not stored twice"


def test_a_reused_id_with_other_content_must_be_rejected_not_silently_dropped() -> None:
    other = dict(EVENT, text="other content")
    counts = classify([describe("m1", EVENT), describe("m2", other)], found(items={EVENT["event_id"]: STORED_AT}))
    assert counts.duplicate_effects == 1
    resent = dict(EVENT, occurred_at="2026-03-05T00:00:00+00:00")  # same content, another time: a resend
    assert payload_hash(resent) == payload_hash(EVENT)


def test_realize_fills_fresh_ids_reuses_the_previous_one_and_resends_payloads() -> None:
    template = {"kind": "feedback.received", "event_id": "<fresh-event-id>", "feedback_id": "<fresh-external-id>",
                "occurred_at": "<occurred-at>", "text": "a"}  # fmt: skip
    first, reused, resent = realize([template, dict(template, event_id=REUSED_ID, text="b"), RESEND])
    assert first["event_id"] != "<fresh-event-id>" and reused["event_id"] == first["event_id"]
    assert resent == reused


def test_a_refused_message_only_logged_is_counted_apart_from_lost() -> None:
    refused = Sent("m9", None, None, None, "h", reaches_task=False, log_token="pickle-ran-1")
    assert classify([refused], found(), {"m9"}).refused_unrecorded == 1
    assert classify([refused], found()).lost == 1


def test_realize_leaves_a_bare_string_that_holds_the_placeholder_as_it_is() -> None:
    """Hypothesis mines string constants from the code, so it drew the placeholder itself as a text payload;
    realize took it for a JSON-encoded event and raised, failing the fuzz scenario (seen in CI)."""
    encoded = json.dumps({"kind": "feedback.received", "event_id": FRESH_ID, "text": "t"})

    bare, not_an_object, filled = realize([FRESH_ID, f"[{json.dumps(FRESH_ID)}]", encoded])

    assert (bare, not_an_object) == (FRESH_ID, f"[{json.dumps(FRESH_ID)}]")
    assert json.loads(filled)["event_id"] != FRESH_ID
