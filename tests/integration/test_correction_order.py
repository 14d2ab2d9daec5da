"""Tag corrections that arrive out of order (a requeue, two workers): the later decision about a tag wins."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import content
from tests.integration.test_ingest_race import DIMS, FakeEmbedder, messages, service
from worker.migrate import seed_taxonomy
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.services import ServiceUrls
from worker.store.model_versions import register_model_version

pytestmark = pytest.mark.integration


def correction(content_id: str, corrected_at: str, **change: list[str]) -> dict[str, object]:
    item = {"kind": "content", "external_id": content_id}
    return {"kind": "tag.corrected", "event_id": str(uuid.uuid4()), "item": item, "actor": "jane@example.com",
            "corrected_at": corrected_at, **change}  # fmt: skip


def stored_content(stack: ServiceUrls, engine: Engine, body: str):  # type: ignore[no-untyped-def]
    """A content item stored through an ingest service; returns the service's `run` and the item's event."""
    seed_taxonomy(stack.database_url, DEFAULT_TAXONOMY)
    with engine.begin() as conn:
        version = register_model_version(conn, name="fake-corrections@1", base_model="fake", path=None, dims=DIMS)
    run = service(engine, version, FakeEmbedder()).run
    item = content(body)
    assert run(messages([item])).stored == 1
    return run, item


def test_an_older_correction_arriving_after_a_newer_one_does_not_undo_it(stack: ServiceUrls, engine: Engine) -> None:
    run, item = stored_content(stack, engine, "Subject line: the spring sale ends Friday")
    newer = correction(item["content_id"], "2026-03-02T00:00:00+00:00", removed=["email"])
    older = correction(item["content_id"], "2026-03-01T00:00:00+00:00", added=["email", "paid_search"])

    assert run(messages([newer])).corrections == 1
    assert run(messages([older])).corrections == 1  # recorded, and applied where nobody decided later

    with engine.connect() as conn:
        query = """SELECT t.name, l.present FROM item_labels l JOIN tags t ON t.id = l.tag_id
                   JOIN items i ON i.id = l.item_id WHERE i.external_id = :c"""
        labels = dict(conn.execute(text(query), {"c": item["content_id"]}).all())
        query = """SELECT t.name FROM item_tags it JOIN tags t ON t.id = it.tag_id
                   JOIN items i ON i.id = it.item_id WHERE i.external_id = :c AND it.source = 'human'"""
        human = set(conn.scalars(text(query), {"c": item["content_id"]}))
    assert labels == {"email": False, "paid_search": True}
    assert human == {"paid_search"}


@pytest.mark.parametrize("first", ["lower event id", "greater event id"])
def test_two_corrections_at_the_same_moment_end_the_same_in_either_order(
    first: str, stack: ServiceUrls, engine: Engine
) -> None:
    """A tie on `corrected_at` went to whichever arrived last."""
    run, item = stored_content(stack, engine, "Webinar invite: attribution for B2B")
    same_time = "2026-03-05T00:00:00+00:00"
    low, high = sorted(
        [correction(item["content_id"], same_time, added=["email"]),
         correction(item["content_id"], same_time, removed=["email"])],
        key=lambda c: uuid.UUID(str(c["event_id"])),
    )  # fmt: skip
    for event in (low, high) if first == "lower event id" else (high, low):
        assert run(messages([event])).corrections == 1

    with engine.connect() as conn:
        query = """SELECT l.present FROM item_labels l JOIN tags t ON t.id = l.tag_id
                   JOIN items i ON i.id = l.item_id WHERE i.external_id = :c AND t.name = 'email'"""
        present = conn.scalar(text(query), {"c": item["content_id"]})
    assert present is ("added" in high), "the correction with the greater event id decides"
