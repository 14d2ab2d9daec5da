"""A tag correction that arrives before its item (producers send out of order) waits, and applies when the item
is stored, through the ingest batch the worker's task runs."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import content
from tests.integration.test_ingest_race import DIMS, FakeEmbedder, messages, service
from worker.corrections import apply_arrived_corrections, apply_corrections, lock_for_arrivals
from worker.db import session_scope
from worker.ingest import IngestService
from worker.migrate import seed_taxonomy
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.pipeline.validate import Accepted, RawMessage, parse_message
from worker.services import ServiceUrls
from worker.settings import IngestSettings
from worker.store.model_versions import register_model_version
from worker.store.rejected import record_rejections
from worker.store.status import pipeline_counts

pytestmark = pytest.mark.integration


@pytest.fixture
def ingest(stack: ServiceUrls, engine: Engine) -> IngestService:
    seed_taxonomy(stack.database_url, DEFAULT_TAXONOMY)
    with engine.begin() as conn:
        version = register_model_version(conn, name="fake-waiting@1", base_model="fake", path=None, dims=DIMS)
    return service(engine, version, FakeEmbedder())


def correction(content_id: str, corrected_at: str, **change: list[str]) -> dict[str, Any]:
    item = {"kind": "content", "external_id": content_id}
    return {"kind": "tag.corrected", "event_id": str(uuid.uuid4()), "item": item, "actor": "jane@example.com",
            "corrected_at": corrected_at, **change}  # fmt: skip


def human_tags(engine: Engine, content_id: str) -> set[str]:
    query = """SELECT t.name FROM item_tags it JOIN tags t ON t.id = it.tag_id JOIN items i ON i.id = it.item_id
               WHERE i.kind = 'content' AND i.external_id = :c AND it.source = 'human'"""
    with engine.connect() as conn:
        return set(conn.scalars(text(query), {"c": content_id}))


def rejected(engine: Engine, message_ids: list[str]) -> dict[str, tuple[str, str | None]]:
    """message id -> (reason, the external id of the item it waits for)."""
    query = "SELECT message_id, reason, item_external_id FROM rejected_events WHERE message_id = ANY(:m)"
    with engine.connect() as conn:
        return {m: (r, x) for m, r, x in conn.execute(text(query), {"m": message_ids}).tuples()}


def waiting_count(engine: Engine) -> int:
    with session_scope(engine) as session:
        return int(pipeline_counts(session)["rejected"]["waiting_for_item"])


def test_a_correction_sent_before_its_item_applies_when_the_item_arrives(ingest: IngestService, engine: Engine) -> None:
    """It was rejected for good ("names unknown item"), and the person's decision was lost."""
    item = content("Subject line: the spring sale ends Friday")
    fix = correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["email", "pricing"])
    sent = messages([fix])
    before = waiting_count(engine)

    assert ingest.run(sent).corrections == 0
    reason, waits_for = rejected(engine, [sent[0].message_id])[sent[0].message_id]
    assert f"unknown item content/{item['content_id']}; it is applied when that item is stored" in reason
    assert waits_for == item["content_id"]
    assert waiting_count(engine) == before + 1, "`tagworker status` shows it waiting"

    summary = ingest.run(messages([item]))
    assert (summary.stored, summary.corrections, summary.rejected) == (1, 1, 0)
    assert waiting_count(engine) == before
    assert human_tags(engine, item["content_id"]) == {"email", "pricing"}
    assert rejected(engine, [sent[0].message_id]) == {}, "no longer a rejection"

    assert ingest.run(sent).corrections == 0, "a redelivery is applied once"
    assert rejected(engine, [sent[0].message_id]) == {}
    with engine.connect() as conn:
        stored = conn.scalar(text("SELECT count(*) FROM tag_corrections WHERE event_id = :e"), {"e": fix["event_id"]})
    assert stored == 1


def test_corrections_waiting_for_one_item_apply_in_corrected_at_order(ingest: IngestService, engine: Engine) -> None:
    item = content("Paid search or email for the launch?")
    newer = correction(item["content_id"], "2026-03-02T00:00:00+00:00", removed=["email"])
    older = correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["email", "paid_search"])
    for event in (newer, older):
        sent = messages([event])
        assert ingest.run(sent).corrections == 0 and rejected(engine, [sent[0].message_id])

    assert ingest.run(messages([item])).corrections == 2

    assert human_tags(engine, item["content_id"]) == {"paid_search"}
    query = """SELECT c.event_id::text, c.tags_before, c.tags_after
               FROM tag_corrections c JOIN items i ON i.id = c.item_id WHERE i.external_id = :c ORDER BY c.id"""
    with engine.connect() as conn:
        applied = conn.execute(text(query), {"c": item["content_id"]}).tuples().all()
    assert applied == [(older["event_id"], [], ["email", "paid_search"]),
                       (newer["event_id"], ["email", "paid_search"], ["paid_search"])]  # fmt: skip


def test_a_waiting_correction_that_fails_when_its_item_arrives_stays_rejected_for_that(
    ingest: IngestService, engine: Engine
) -> None:
    item = content("Release notes for the March update")
    sent = messages([correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["bug"])])
    assert ingest.run(sent).corrections == 0 and rejected(engine, [sent[0].message_id])

    assert ingest.run(messages([item])).stored == 1

    reason, waits_for = rejected(engine, [sent[0].message_id])[sent[0].message_id]
    assert "bug (facet feedback_type, for feedback items) cannot be added to a content item" in reason
    assert waits_for is None, "it waits no longer"
    assert human_tags(engine, item["content_id"]) == set()


def test_an_item_stored_while_its_correction_is_being_rejected_still_gets_it(
    ingest: IngestService, engine: Engine
) -> None:
    """Neither transaction saw the other's row: the item's batch found nothing waiting, the correction's batch no
    item, and the correction waited for an item already there."""
    item = content("Case study: a 30% lift from onboarding emails")
    raw = RawMessage(
        str(uuid.uuid4()), (correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["email"]),), {}
    )
    accepted = parse_message(raw, IngestSettings())
    assert isinstance(accepted, Accepted)
    item_batch = threading.Thread(target=lambda: ingest.run(messages([item])))

    with session_scope(engine) as correcting:  # what the correction's batch writes, held open
        lock_for_arrivals(correcting, [accepted], [])
        applied, unapplied = apply_corrections(correcting, [accepted])
        assert (applied, len(unapplied)) == (0, 1)
        record_rejections(correcting, unapplied)
        item_batch.start()
        item_batch.join(1.0)
        assert item_batch.is_alive(), "the item's batch waits for the rejection to commit"
        correcting.commit()
    item_batch.join(30)

    assert human_tags(engine, item["content_id"]) == {"email"}
    assert rejected(engine, [raw.message_id]) == {}


def test_a_correction_waiting_for_an_item_an_older_worker_stored_is_swept_up(
    ingest: IngestService, engine: Engine
) -> None:
    """A worker from before corrections could wait stores items without looking for them (rolling upgrade): the
    correction waited for ever. The refit task sweeps them up."""
    item = content("Webinar invite: attribution in 30 minutes")
    sent = messages([correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["email"])])
    assert ingest.run(sent).corrections == 0
    with engine.begin() as conn:  # what the older worker writes: the item, and nothing about corrections
        conn.execute(text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, occurred_at, "
                          "metadata) VALUES ('content', :c, gen_random_uuid(), 'x', 'x', now(), '{}')"),
                     {"c": item["content_id"]})  # fmt: skip

    with session_scope(engine) as session:
        assert apply_arrived_corrections(session) == 1
        session.commit()
    assert human_tags(engine, item["content_id"]) == {"email"}
    assert rejected(engine, [sent[0].message_id]) == {}
    with session_scope(engine) as session:
        assert apply_arrived_corrections(session) == 0
