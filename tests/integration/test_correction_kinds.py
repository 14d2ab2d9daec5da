"""A correction cannot add a tag whose facet does not apply to the item's kind (`applies_to` in the taxonomy).

The default taxonomy's `feedback_type` (bug, praise, ...) is for feedback and `channel` for content. Each test
runs in one transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.integration.helpers import correct
from worker.errors import CorrectionError
from worker.migrate import seed_taxonomy
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.services import ServiceUrls
from worker.store.item_tags import item_tag_names

pytestmark = pytest.mark.integration


@pytest.fixture
def session(stack: ServiceUrls, engine: Engine) -> Iterator[Session]:
    seed_taxonomy(stack.database_url, DEFAULT_TAXONOMY)
    with Session(engine) as session:
        yield session
        session.rollback()


def new_item(session: Session, kind: str, *, human_tags: Sequence[str] = ()) -> int:
    item_id = session.scalar(
        text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, occurred_at, metadata) "
             "VALUES (:k, :x, gen_random_uuid(), 'x', 'The spring sale ends Friday', now(), '{}') RETURNING id"),
        {"k": kind, "x": f"kinds-{uuid.uuid4().hex[:12]}"},
    )  # fmt: skip
    for tag in human_tags:  # as a correction before applies_to was checked left it
        session.execute(
            text("INSERT INTO item_tags (item_id, tag_id, score, source, head) "
                 "SELECT :i, id, 1.0, 'human', 'human' FROM tags WHERE name = :t"),
            {"i": item_id, "t": tag},
        )  # fmt: skip
    assert item_id is not None
    return int(item_id)


def corrections_of(session: Session, item_id: int) -> int:
    return int(session.scalar(text("SELECT count(*) FROM tag_corrections WHERE item_id = :i"), {"i": item_id}) or 0)


@pytest.mark.parametrize(
    ("kind", "tag", "facet", "other"),
    [("content", "bug", "feedback_type", "feedback"), ("feedback", "email", "channel", "content")],
)
def test_a_tag_for_the_other_kind_is_refused_and_nothing_is_written(
    session: Session, kind: str, tag: str, facet: str, other: str
) -> None:
    """`bug` went onto a content item as a human tag, and the tagger then learnt from that label."""
    item_id = new_item(session, kind)

    with pytest.raises(
        CorrectionError, match=rf"{tag} \(facet {facet}, for {other} items\) cannot be added to a {kind}"
    ):
        correct(session, item_id, added=["pricing", tag])

    assert item_tag_names(session, item_id) == set()
    assert corrections_of(session, item_id) == 0


def test_a_tag_for_the_other_kind_can_be_removed_to_clean_up(session: Session) -> None:
    item_id = new_item(session, "content", human_tags=["bug", "email"])

    assert correct(session, item_id, removed=["bug"]) == ["email"]
    labels = session.execute(
        text("SELECT g.name, l.present FROM item_labels l JOIN tags g ON g.id = l.tag_id WHERE l.item_id = :i"),
        {"i": item_id},
    )
    assert dict(labels.tuples().all()) == {"bug": False}


def test_tags_of_the_items_kind_and_of_facets_for_both_kinds_are_added(session: Session) -> None:
    assert correct(session, new_item(session, "feedback"), added=["bug", "pricing"]) == ["bug", "pricing"]
    assert correct(session, new_item(session, "content"), added=["email", "pricing"]) == ["email", "pricing"]
