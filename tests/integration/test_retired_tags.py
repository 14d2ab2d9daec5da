"""Tags a new taxonomy drops (retired): people can remove them, and every read tells them from current tags.

Each test runs in one transaction that is rolled back, so the shared database keeps the default taxonomy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.integration.helpers import correct
from worker.errors import CorrectionError
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY, parse_taxonomy, read_taxonomy
from worker.store.review import review_queue, tags_of_item
from worker.store.search import tag_id_by_name
from worker.store.tags import save_taxonomy

pytestmark = pytest.mark.integration


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
        session.rollback()


def new_item(session: Session, *, model_tags: dict[str, float] | None = None, margin: float | None = None) -> int:
    item_id = session.scalar(
        text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, occurred_at, metadata) "
             "VALUES ('feedback', :x, gen_random_uuid(), 'x', 'Lovely product', now(), '{}') RETURNING id"),
        {"x": f"retired-{uuid.uuid4().hex[:12]}"},
    )  # fmt: skip
    for tag, score in (model_tags or {}).items():
        session.execute(
            text("INSERT INTO item_tags (item_id, tag_id, score, source, head) "
                 "SELECT :i, id, :s, 'model', 'zero-shot' FROM tags WHERE name = :t"),
            {"i": item_id, "s": score, "t": tag},
        )  # fmt: skip
    if margin is not None:
        session.execute(text("INSERT INTO item_tagging (item_id, margin) VALUES (:i, :m)"), {"i": item_id, "m": margin})
    assert item_id is not None
    return int(item_id)


def retire(session: Session, tag: str) -> None:
    """What `tagworker tags load` does with a file that drops `tag`."""
    data = read_taxonomy(DEFAULT_TAXONOMY).model_dump(mode="json")
    for facet in data["facets"]:
        facet["tags"] = [t for t in facet["tags"] if t["name"] != tag]
    save_taxonomy(session, parse_taxonomy(data))


def test_a_person_removes_a_retired_tag_but_cannot_add_it_again(session: Session) -> None:
    """Removing one used to fail with "unknown tag(s) praise"."""
    item_id = new_item(session)
    assert correct(session, item_id, added=["praise", "bug"]) == ["bug", "praise"]
    retire(session, "praise")

    assert correct(session, item_id, removed=["praise"]) == ["bug"]
    labels = session.execute(
        text("SELECT g.name, l.present FROM item_labels l JOIN tags g ON g.id = l.tag_id WHERE l.item_id = :i"),
        {"i": item_id},
    )
    assert dict(labels.tuples().all()) == {"praise": False, "bug": True}, "the removal is a label (training data)"
    with pytest.raises(CorrectionError, match=r"tag\(s\) praise retired from the taxonomy: .* but not added"):
        correct(session, item_id, added=["praise"])


def test_an_items_tags_and_the_review_queue_mark_retired_tags(session: Session) -> None:
    shown = new_item(session)
    correct(session, shown, added=["praise", "bug"])
    queued = new_item(session, model_tags={"praise": 0.91, "bug": 0.55}, margin=-1.0)
    retire(session, "praise")

    assert [(r["tag"], r["source"], r["retired"]) for r in tags_of_item(session, shown)] == [
        ("bug", "human", False),
        ("praise", "human", True),
    ]
    [entry] = [i for i in review_queue(session, 1000) if i.item_id == queued]
    assert (entry.tags, entry.retired_tags) == (["bug:0.55"], ["praise"])


def test_search_by_tag_takes_current_tags_only(session: Session) -> None:
    retire(session, "praise")

    assert tag_id_by_name(session, "praise") is None
    assert tag_id_by_name(session, "bug") is not None


def test_the_dashboards_daily_tag_counts_keep_retired_tags_marked(session: Session) -> None:
    new_item(session, model_tags={"praise": 0.9, "bug": 0.8})
    retire(session, "praise")

    result = session.execute(
        text("SELECT * FROM dashboard.tag_counts_daily WHERE tag IN ('praise', 'bug') AND day = current_date")
    )
    columns = list(result.keys())
    retired = {(r.tag, r.source): r.retired for r in result}
    assert columns == ["day", "kind", "facet", "tag", "source", "items", "retired"], "only appended, never reordered"
    assert retired[("praise", "model")] is True and retired[("bug", "model")] is False
    options = session.scalar(text("SELECT reloptions FROM pg_class WHERE oid = 'dashboard.tag_counts_daily'::regclass"))
    assert "security_barrier=true" in (options or [])
