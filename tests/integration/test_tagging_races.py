"""Tagging against concurrent corrections, refits and taxonomy changes, in a database of its own."""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.integration.helpers import scratch_database
from tests.integration.test_ingest_race import DIMS, FakeEmbedder
from worker.db import get_engine, session_scope
from worker.migrate import seed_taxonomy
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.services import ServiceUrls
from worker.settings import TaggingSettings
from worker.store.item_tags import ModelTag, apply_correction, replace_model_tags
from worker.store.model_versions import register_model_version
from worker.tagging import TaggingService

pytestmark = pytest.mark.integration

Tagged = tuple[Engine, TaggingService, list[int]]


@pytest.fixture
def tagged(stack: ServiceUrls) -> Iterator[tuple[Engine, TaggingService, list[int]]]:
    """A migrated database with the default taxonomy, one model version and three embedded content items.

    Content, not feedback: the tests correct them with funnel_stage tags, a facet for content only.
    """
    for url in scratch_database(stack.database_url, prefix="tagraces"):
        seed_taxonomy(url, DEFAULT_TAXONOMY)
        engine = get_engine(url)
        with engine.begin() as conn:
            version = register_model_version(conn, name="fake-tags@1", base_model="fake", path=None, dims=DIMS)
            items = [store_item(conn, version, f"content {i}") for i in range(3)]
        service = TaggingService(engine=engine, embedder=FakeEmbedder(), model_version_id=version,
                                 settings=TaggingSettings())  # fmt: skip
        yield engine, service, items


def store_item(conn, version: int, body: str) -> int:  # type: ignore[no-untyped-def]
    item_id = int(conn.scalar(
        text("""INSERT INTO items (kind, external_id, event_id, text, content_sha256, occurred_at, metadata)
                VALUES ('content', :x, :e, :x, :h, now(), '{}') RETURNING id"""),
        {"x": body, "e": uuid.uuid4(), "h": hashlib.sha256(body.encode()).hexdigest()},
    ))  # fmt: skip
    vector = np.full(DIMS, 1 / np.sqrt(DIMS)).tolist()
    conn.execute(text("INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used) "
                      "VALUES (:i, :v, :vec, 1, 1)"), {"i": item_id, "v": version, "vec": str(vector)})  # fmt: skip
    return item_id


def tag_id(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT id FROM tags WHERE name = :n AND retired_at IS NULL"), {"n": name}))


def tags_of(engine: Engine, item_id: int) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT t.name, it.source FROM item_tags it JOIN tags t ON t.id = it.tag_id "
                                 "WHERE it.item_id = :i"), {"i": item_id})  # fmt: skip
        return set(rows.tuples().all())


def correct(session: Session, item_id: int, added: list[str]) -> None:
    apply_correction(session, event_id=uuid.uuid4(), item_id=item_id, added=added, removed=[], actor="qa",
                     corrected_at=datetime.now(UTC))  # fmt: skip


def test_items_a_batch_tagged_with_the_tagger_before_are_retagged(
    tagged: Tagged,
) -> None:
    """A batch that predicted with the old tagger and committed after the new one's re-tag kept its tags for good."""
    engine, service, items = tagged
    old = service.fit(force=True)
    assert old is not None and service.retag_pending() == 3
    new = service.fit(force=True)
    assert new is not None and service.retag_pending() == 3
    with session_scope(engine) as session:  # what the late batch writes
        replace_model_tags(session, item_ids=items[:1], margins=[None], tags=[], tagger_id=old.tagger_id,
                           model_version_id=service.model_version_id)  # fmt: skip
        session.commit()
    assert service.retag_pending() == 1
    assert service.retag_pending() == 0


def test_no_model_tag_goes_on_a_retired_tag(tagged: Tagged) -> None:
    engine, service, items = tagged
    retired = tag_id(engine, "awareness")
    with engine.begin() as conn:
        conn.execute(text("UPDATE tags SET retired_at = now() WHERE id = :t"), {"t": retired})
    with session_scope(engine) as session:  # a batch tagged by a tagger read before the taxonomy changed
        replace_model_tags(session, item_ids=items[:1], margins=[None], tags=[ModelTag(items[0], retired, 0.9, "lr")],
                           tagger_id=service.fit(force=True).tagger_id,  # type: ignore[union-attr]
                           model_version_id=service.model_version_id)  # fmt: skip
        session.commit()
    assert tags_of(engine, items[0]) == set()


def test_a_model_tag_written_during_a_correction_waits_for_it(tagged: Tagged) -> None:
    """It read the item's labels from before the correction: `awareness` (model) beside `conversion` (a person),
    two tags in a single-label facet."""
    engine, service, items = tagged
    tagger = service.fit(force=True)
    assert tagger is not None
    awareness = tag_id(engine, "awareness")

    def retag() -> None:
        with session_scope(engine) as session:
            replace_model_tags(session, item_ids=items[:1], margins=[0.1],
                               tags=[ModelTag(items[0], awareness, 0.9, "lr")], tagger_id=tagger.tagger_id,
                               model_version_id=service.model_version_id)  # fmt: skip
            session.commit()

    with session_scope(engine) as person:
        correct(person, items[0], ["conversion"])
        writer = threading.Thread(target=retag)
        writer.start()
        writer.join(1.0)
        assert writer.is_alive(), "the model's write waits for the correction"
        person.commit()
    writer.join(10)
    assert tags_of(engine, items[0]) == {("conversion", "human")}


def test_a_label_committed_after_a_fit_with_a_lower_id_refits(tagged: Tagged) -> None:
    """The fit counted as current while no correction id exceeded what it read; this one had a lower id."""
    engine, service, items = tagged
    with session_scope(engine) as slow, session_scope(engine) as fast:
        correct(slow, items[0], ["conversion"])  # the lower id, still open
        correct(fast, items[1], ["awareness"])
        fast.commit()
        assert service.fit(force=True) is not None
        slow.commit()
    assert service.fit() is not None, "the slow correction was never fitted"
    assert service.fit() is None


def test_a_worker_whose_version_was_retired_stops_retagging(tagged: Tagged) -> None:
    """A worker that has not switched yet re-tagged the old version's items after the switch, over the new tags."""
    engine, service, items = tagged
    assert service.fit(force=True) is not None
    with engine.begin() as conn:
        conn.execute(text("UPDATE model_versions SET status = 'retired' WHERE id = :v"),
                     {"v": service.model_version_id})  # fmt: skip
    assert service.retag_pending() == 0
    assert all(tags_of(engine, item) == set() for item in items)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM item_tagging")) == 0, "nothing written for the retired version"
