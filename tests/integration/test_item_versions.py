"""Several events for one item against real Postgres: the newest is stored, the others are counted superseded."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Engine, text

from tests.integration.helpers import feedback
from tests.integration.test_ingest_race import DIMS, FakeEmbedder, messages, service
from worker.store.model_versions import register_model_version

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def version(engine: Engine) -> int:
    with engine.begin() as conn:
        return register_model_version(conn, name="fake-versions@1", base_model="fake", path=None, dims=DIMS)


def stored_text(engine: Engine, feedback_id: str) -> str | None:
    with engine.connect() as conn:
        query = "SELECT text FROM items WHERE kind = 'feedback' AND external_id = :f"
        return conn.scalar(text(query), {"f": feedback_id})


def test_a_create_and_an_edit_of_one_item_in_one_batch_store_the_edit(engine: Engine, version: int) -> None:
    """Both in one multi-row upsert used to fail the whole batch (Postgres: "cannot affect row a second time")."""
    item = f"fb-{uuid.uuid4().hex[:12]}"
    batch = [feedback("Checkout is slow", feedback_id=item, occurred_at="2026-01-01T00:00:00+00:00")]
    batch.append(feedback("Checkout is slow on mobile", feedback_id=item, occurred_at="2026-01-02T00:00:00+00:00"))
    batch += [feedback(f"Unrelated message {i}") for i in range(3)]

    summary = service(engine, version, FakeEmbedder()).run(messages(batch))

    assert (summary.stored, summary.superseded, summary.failed, summary.rejected) == (4, 1, 0, 0), summary
    assert stored_text(engine, item) == "Checkout is slow on mobile"


class PoisonEmbedder(FakeEmbedder):
    def embed(self, texts: list[str]):  # type: ignore[no-untyped-def]
        if any("POISON" in t for t in texts):
            raise RuntimeError("model choked on a poison text")
        return super().embed(texts)


def test_when_the_newest_event_of_an_item_fails_to_embed_the_older_one_is_stored(engine: Engine, version: int) -> None:
    """The older event used to be counted superseded next to a failed newest one: the item got neither."""
    item = f"fb-{uuid.uuid4().hex[:12]}"
    batch = [feedback("Refund took three weeks", feedback_id=item, occurred_at="2026-01-01T00:00:00+00:00")]
    batch.append(feedback("POISON edit", feedback_id=item, occurred_at="2026-01-02T00:00:00+00:00"))

    summary = service(engine, version, PoisonEmbedder()).run(messages(batch))

    assert (summary.stored, summary.superseded, summary.failed) == (1, 0, 1), summary
    assert stored_text(engine, item) == "Refund took three weeks"


def test_an_older_or_equally_old_event_for_a_stored_item_is_superseded(engine: Engine, version: int) -> None:
    item, same_time = f"fb-{uuid.uuid4().hex[:12]}", "2026-02-01T00:00:00+00:00"
    low, high = sorted(str(uuid.uuid4()) for _ in range(2))
    run = service(engine, version, FakeEmbedder()).run

    assert run(messages([feedback("kept", feedback_id=item, event_id=high, occurred_at=same_time)])).stored == 1
    summary = run(messages([feedback("tie, lower event id", feedback_id=item, event_id=low, occurred_at=same_time)]))
    older = run(messages([feedback("older", feedback_id=item, occurred_at="2026-01-01T00:00:00+00:00")]))

    assert (summary.stored, summary.superseded, older.stored, older.superseded) == (0, 1, 0, 1)
    assert stored_text(engine, item) == "kept"


def test_a_redelivered_event_that_was_replaced_since_is_a_duplicate(engine: Engine, version: int) -> None:
    """Without occurred_at, a redelivery of the first event used to win again (its default time is 'now')."""
    item = f"fb-{uuid.uuid4().hex[:12]}"
    first = feedback("The old wording", feedback_id=item)
    edit = feedback("The new wording", feedback_id=item)
    for event in (first, edit):
        event.pop("occurred_at")
    run = service(engine, version, FakeEmbedder()).run

    assert run(messages([first])).stored == 1
    assert run(messages([edit])).stored == 1
    again = run(messages([first]))

    assert (again.stored, again.duplicates) == (0, 1), again
    assert stored_text(engine, item) == "The new wording"


def test_an_edit_drops_the_items_vectors_under_other_versions(engine: Engine, version: int) -> None:
    """They were of the old text, and the backfill only fills in missing vectors: they stayed stale for good."""
    with engine.begin() as conn:
        other = register_model_version(conn, name="fake-versions@2", base_model="fake", path=None, dims=DIMS)
    item = f"fb-{uuid.uuid4().hex[:12]}"
    run = service(engine, version, FakeEmbedder()).run
    run(messages([feedback("Billing page is confusing", feedback_id=item, occurred_at="2026-01-01T00:00:00+00:00")]))
    with engine.begin() as conn:  # what a backfill for the other version writes
        conn.execute(text("""INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
                             SELECT item_id, :other, vector, 1, 1 FROM embeddings WHERE model_version_id = :v
                             AND item_id = (SELECT id FROM items WHERE external_id = :f)"""),
                     {"other": other, "v": version, "f": item})  # fmt: skip

    run(messages([feedback("Billing page is fine now", feedback_id=item, occurred_at="2026-01-02T00:00:00+00:00")]))

    with engine.connect() as conn:
        query = "SELECT model_version_id FROM embeddings e JOIN items i ON i.id = e.item_id WHERE i.external_id = :f"
        assert set(conn.scalars(text(query), {"f": item})) == {version}


def test_a_whole_batch_redelivered_keeps_the_newest_text(engine: Engine, version: int) -> None:
    """The event that lost inside the batch was not remembered: redelivered without a time, it won again."""
    item = f"fb-{uuid.uuid4().hex[:12]}"
    batch = [feedback("First wording", feedback_id=item), feedback("Second wording", feedback_id=item)]
    for event in batch:
        event.pop("occurred_at")
    run = service(engine, version, FakeEmbedder()).run

    assert run(messages(batch)).stored == 1
    again = run(messages(batch))  # a worker killed after the commit, before the ack

    assert (again.stored, again.duplicates) == (0, 2), again
    assert stored_text(engine, item) == "Second wording"
