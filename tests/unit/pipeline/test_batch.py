"""Sorting a batch into new items, corrections, duplicates and rejections; embedding with poison isolation."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from schemas import ContentCreated, FeedbackReceived
from tests.unit.factories import (
    FIXED_ID,
    FakeEmbedder,
    accepted,
    content_payload,
    correction_payload,
    feedback_payload,
    message,
)
from worker.pipeline.batch import (
    content_hash,
    embed_isolating_failures,
    embed_newest_that_embeds,
    item_values,
    sort_batch,
)
from worker.pipeline.validate import Rejection, parse_message
from worker.settings import IngestSettings

EVENT_ID = uuid.UUID(FIXED_ID)


def test_new_items_and_corrections_are_separated_in_arrival_order() -> None:
    content, feedback, correction = (
        accepted(content_payload(), "m1"),
        accepted(feedback_payload(), "m2"),
        accepted(correction_payload(), "m3"),
    )

    out = sort_batch([content, correction, feedback], stored={})

    assert out.items == [content, feedback]
    assert out.corrections == [correction]
    assert (out.rejections, out.duplicates) == ([], 0)


def test_rejections_from_validation_pass_through() -> None:
    bad = Rejection("m1", "text is empty", "{}")

    out = sort_batch([bad, accepted(content_payload(), "m2")], stored={})

    assert out.rejections == [bad]
    assert len(out.items) == 1


def test_the_same_event_twice_in_a_batch_is_one_item_and_one_duplicate() -> None:
    payload = content_payload(event_id=FIXED_ID)
    first, again = accepted(payload, "m1"), accepted(dict(payload, occurred_at="2030-01-01T00:00:00Z"), "m2")

    out = sort_batch([first, again], stored={})

    assert out.items == [first]
    assert out.duplicates == 1
    assert out.rejections == []


def test_of_two_events_for_one_item_the_newer_is_written_and_the_older_superseded() -> None:
    """One upsert cannot touch a row twice: both in one batch failed the whole batch in Postgres."""
    older = accepted(feedback_payload(text="first words", occurred_at="2024-01-01T00:00:00Z"), "m1")
    newer = accepted(feedback_payload(text="edited words", occurred_at="2024-01-02T00:00:00Z"), "m2")
    other = accepted(feedback_payload(feedback_id="fb-0002"), "m3")

    for arrival in ([older, newer, other], [newer, older, other]):
        out = sort_batch(arrival, stored={})
        assert (out.items, out.superseded) == ([newer, other], [older])


def test_two_events_for_one_item_at_the_same_time_go_to_the_greater_event_id() -> None:
    low, high = sorted(str(uuid.uuid4()) for _ in range(2))
    same_time = "2024-01-01T00:00:00Z"
    first = accepted(feedback_payload(event_id=low, text="one", occurred_at=same_time), "m1")
    second = accepted(feedback_payload(event_id=high, text="two", occurred_at=same_time), "m2")

    assert sort_batch([second, first], stored={}).items == [second]
    assert sort_batch([first, second], stored={}).items == [second]


def test_an_event_id_reused_in_the_batch_for_other_content_is_rejected() -> None:
    first = accepted(content_payload(event_id=FIXED_ID, text="first text"), "m1")
    reused = accepted(content_payload(event_id=FIXED_ID, text="other text"), "m2")

    out = sort_batch([first, reused], stored={})

    assert out.items == [first]
    assert out.duplicates == 0
    [rejection] = out.rejections
    assert rejection.message_id == "m2"
    assert rejection.status == "invalid"
    assert (rejection.event_id, rejection.kind) == (EVENT_ID, "content.created")
    assert rejection.reason == (
        f"event_id {FIXED_ID} was already used in this batch for different content; send a new event_id"
    )
    assert rejection.raw.isascii() and "other text" in rejection.raw


def test_an_event_already_stored_with_the_same_content_is_a_duplicate() -> None:
    event = accepted(content_payload(event_id=FIXED_ID))

    out = sort_batch([event], stored={EVENT_ID: content_hash(event.event)})

    assert (out.items, out.rejections, out.duplicates) == ([], [], 1)


def test_an_event_id_stored_with_other_content_is_rejected() -> None:
    stored = accepted(content_payload(event_id=FIXED_ID, text="what was stored"))
    event = accepted(content_payload(event_id=FIXED_ID, text="something else"))

    out = sort_batch([event], stored={EVENT_ID: content_hash(stored.event)})

    [rejection] = out.rejections
    assert out.items == []
    assert rejection.reason.startswith(f"event_id {FIXED_ID} was already used by a stored event")
    assert "already used" in rejection.reason and "send a new event_id" in rejection.reason


def test_a_stored_correction_seen_again_is_a_duplicate() -> None:
    correction = accepted(correction_payload(event_id=FIXED_ID))

    out = sort_batch([correction], stored={EVENT_ID: None})  # corrections are stored without a hash

    assert (out.corrections, out.rejections, out.duplicates) == ([], [], 1)


def test_an_item_reusing_a_stored_corrections_id_is_rejected() -> None:
    out = sort_batch([accepted(content_payload(event_id=FIXED_ID))], stored={EVENT_ID: None})

    [rejection] = out.rejections
    assert "already used by a stored event" in rejection.reason


def test_a_correction_reusing_an_items_id_in_the_batch_is_rejected() -> None:
    item = accepted(content_payload(event_id=FIXED_ID), "m1")
    correction = accepted(correction_payload(event_id=FIXED_ID), "m2")

    out = sort_batch([item, correction], stored={})

    assert out.items == [item]
    assert out.corrections == []
    assert [r.message_id for r in out.rejections] == ["m2"]
    assert "already used in this batch" in out.rejections[0].reason


def test_content_hash_ignores_event_id_and_occurred_at() -> None:
    a = accepted(content_payload(event_id=str(uuid.uuid4()), occurred_at="2024-01-01T00:00:00Z")).event
    b = accepted(content_payload(event_id=str(uuid.uuid4()), occurred_at="2025-06-01T12:30:00Z")).event

    assert a.event_id != b.event_id
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 64


@pytest.mark.parametrize(
    "change",
    [{"text": "other"}, {"title": "Other"}, {"metadata": {"author": "kim"}}, {"content_id": "blog-002"}],
    ids=["text", "title", "metadata", "content_id"],
)
def test_content_hash_changes_with_what_the_event_says(change: dict) -> None:
    base = accepted(content_payload(event_id=FIXED_ID)).event
    changed = accepted(content_payload(event_id=FIXED_ID, **change)).event

    assert content_hash(base) != content_hash(changed)


def test_content_hash_tells_kinds_apart() -> None:
    content = accepted(content_payload(text="same words")).event
    feedback = accepted(feedback_payload(text="same words")).event

    assert content_hash(content) != content_hash(feedback)


def test_the_same_correction_twice_in_a_batch_is_a_duplicate() -> None:
    payload = correction_payload(event_id=FIXED_ID)  # no corrected_at: the worker fills it in
    first = parse_message(message(payload, "m1"), IngestSettings())
    time.sleep(0.002)
    again = parse_message(message(payload, "m2"), IngestSettings())

    out = sort_batch([first, again], stored={})

    assert (len(out.corrections), out.duplicates, out.rejections) == (1, 1, [])


def test_item_values_for_content() -> None:
    event = accepted(content_payload(event_id=FIXED_ID, url="https://example.com")).event
    assert isinstance(event, ContentCreated)

    values = item_values(event)

    assert values["kind"] == "content"
    assert values["external_id"] == "blog-001"
    assert values["event_id"] == EVENT_ID
    assert values["content_sha256"] == content_hash(event)
    assert (values["title"], values["url"], values["channel"], values["language"]) == (
        "Subject lines",
        "https://example.com",
        "blog",
        "en",
    )
    assert (values["source"], values["rating"], values["customer_ref"]) == (None, None, None)


def test_item_values_for_feedback() -> None:
    event = accepted(feedback_payload(customer_ref="cust-9")).event
    assert isinstance(event, FeedbackReceived)

    values = item_values(event)

    assert (values["kind"], values["external_id"]) == ("feedback", "fb-0001")
    assert (values["source"], values["rating"], values["customer_ref"]) == ("support", 2.0, "cust-9")
    assert (values["title"], values["url"], values["language"]) == (None, None, None)
    assert values["metadata"] == {}


def test_embedding_a_healthy_batch_calls_the_model_once() -> None:
    embedder = FakeEmbedder()
    batch = [accepted(content_payload(text=f"text {i}"), f"m{i}") for i in range(3)]

    outcome = embed_isolating_failures(embedder, batch)

    assert embedder.calls == [["text 0", "text 1", "text 2"]]
    assert outcome.events == batch
    assert outcome.failures == []
    assert outcome.embeddings is not None
    assert outcome.embeddings.vectors.shape == (3, 4)


def test_embedding_nothing_calls_no_model() -> None:
    embedder = FakeEmbedder()

    outcome = embed_isolating_failures(embedder, [])

    assert (outcome.events, outcome.embeddings, outcome.failures) == ([], None, [])
    assert embedder.calls == []


def test_a_poison_text_fails_alone_and_the_others_embed() -> None:
    embedder = FakeEmbedder()
    good_a = accepted(content_payload(text="fine a"), "m1")
    poison = accepted(feedback_payload(event_id=FIXED_ID, text="this is POISON"), "m2")
    good_b = accepted(feedback_payload(text="fine b"), "m3")

    outcome = embed_isolating_failures(embedder, [good_a, poison, good_b])

    assert outcome.events == [good_a, good_b]
    assert outcome.embeddings is not None
    np.testing.assert_array_equal(
        outcome.embeddings.vectors, np.stack([embedder.vector("fine a"), embedder.vector("fine b")])
    )
    assert (outcome.embeddings.chunks_total, outcome.embeddings.chunks_used) == ([1, 1], [1, 1])
    [failure] = outcome.failures
    assert failure.message_id == "m2"
    assert failure.status == "failed"
    assert failure.reason == "embedding failed: RuntimeError: model choked on a poison text"
    assert (failure.event_id, failure.kind) == (EVENT_ID, "feedback.received")
    assert failure.raw.isascii() and "this is POISON" in failure.raw


def test_when_every_text_is_poison_nothing_embeds() -> None:
    batch = [accepted(content_payload(text=f"POISON {i}"), f"m{i}") for i in range(2)]

    outcome = embed_isolating_failures(FakeEmbedder(), batch)

    assert (outcome.events, outcome.embeddings) == ([], None)
    assert [f.message_id for f in outcome.failures] == ["m0", "m1"]
    assert all(f.reason.startswith("embedding failed") for f in outcome.failures)


def test_a_very_long_failure_message_is_cut() -> None:
    class Exploding(FakeEmbedder):
        def embed(self, texts: list[str]):  # type: ignore[override]
            raise ValueError("x" * 5000)

    outcome = embed_isolating_failures(Exploding(), [accepted(content_payload())])

    assert len(outcome.failures[0].reason) == 2000


def _edits(*texts: str, feedback_id: str = "fb-0001") -> list:  # type: ignore[type-arg]
    """Events for one item, a day apart, oldest first."""
    return [
        accepted(feedback_payload(feedback_id=feedback_id, text=t, occurred_at=f"2026-01-0{day}T00:00:00Z"), f"m{day}")
        for day, t in enumerate(texts, start=1)
    ]


def test_when_an_items_newest_event_is_poison_its_next_newest_is_stored() -> None:
    """The older edit used to be counted superseded and dropped: the item lost both texts."""
    old, newer, newest = _edits("first wording", "second wording", "POISON wording")
    other = accepted(feedback_payload(feedback_id="fb-other", text="unrelated"), "m9")
    batch = sort_batch([old, newer, newest, other], {})

    outcome, superseded = embed_newest_that_embeds(FakeEmbedder(), batch)

    assert outcome.events == [other, newer]
    assert [f.message_id for f in outcome.failures] == ["m3"]
    assert superseded == [old]
    assert outcome.embeddings is not None and outcome.embeddings.vectors.shape == (2, 4)


def test_a_chain_of_poison_edits_falls_back_to_the_newest_that_embeds() -> None:
    batch = sort_batch(_edits("the only good one", "POISON a", "POISON b"), {})

    outcome, superseded = embed_newest_that_embeds(FakeEmbedder(), batch)

    assert [a.event.text for a in outcome.events] == ["the only good one"]  # type: ignore[union-attr]
    assert [f.message_id for f in outcome.failures] == ["m3", "m2"]
    assert superseded == []


def test_without_poison_the_superseded_events_stay_superseded_and_the_model_runs_once() -> None:
    embedder = FakeEmbedder()
    batch = sort_batch(_edits("one", "two"), {})

    outcome, superseded = embed_newest_that_embeds(embedder, batch)

    assert [a.event.text for a in outcome.events] == ["two"]  # type: ignore[union-attr]
    assert [a.event.text for a in superseded] == ["one"]  # type: ignore[union-attr]
    assert embedder.calls == [["two"]]
