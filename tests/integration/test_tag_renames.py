"""A tag renamed with `renamed_from` keeps its labels, human tags and corrections, and the fit sees them.

Each test runs in one transaction that is rolled back, so the shared database keeps the default taxonomy.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
import yaml
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from models import Embedding
from worker.errors import TaxonomyError
from worker.pipeline.tag_fit import FitParams, fit_tagger
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY, parse_taxonomy
from worker.store.item_tags import apply_correction
from worker.store.model_versions import register_model_version
from worker.store.review import tags_of_item
from worker.store.tags import current_taxonomy, human_labels, save_taxonomy
from worker.store.training import labelled_items

pytestmark = pytest.mark.integration
DIMS = 8
Edit = Callable[[dict[str, Any]], None]


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine) as session:
        yield session
        session.rollback()


def default_with(*edits: Edit) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_TAXONOMY.read_text(encoding="utf-8"))
    for edit in edits:
        edit(data)
    return data


def facet(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in data["facets"] if f["name"] == name)


def rename(old: str, new: str, *, to_facet: str | None = None) -> Edit:
    """The edit that renames tag `old` to `new` (with `renamed_from`), moved to `to_facet` if given."""

    def edit(data: dict[str, Any]) -> None:
        for f in data["facets"]:
            spec = next((t for t in f["tags"] if t["name"] == old), None)
            if spec is not None:
                f["tags"].remove(spec)
                target = f if to_facet is None else facet(data, to_facet)
                target["tags"].append(dict(spec, name=new, renamed_from=[old]))

    return edit


def load(session: Session, data: dict[str, Any]) -> Any:
    return save_taxonomy(session, parse_taxonomy(data))


def new_item(session: Session, vector: np.ndarray | None = None, *, model_version_id: int | None = None) -> int:
    item_id = int(
        session.execute(
            text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, occurred_at, metadata) "
                 "VALUES ('feedback', :x, gen_random_uuid(), 'x', 'Lovely product', now(), '{}') RETURNING id"),
            {"x": f"renamed-{uuid.uuid4().hex[:12]}"},
        ).scalar_one()
    )  # fmt: skip
    if vector is not None:
        session.execute(insert(Embedding).values(item_id=item_id, model_version_id=model_version_id, vector=vector))
    return item_id


def correct(session: Session, item_id: int, *, added: list[str], removed: list[str] | None = None) -> list[str]:
    result = apply_correction(
        session, event_id=uuid.uuid4(), item_id=item_id, added=added, removed=removed or [], actor="qa",
        corrected_at=datetime.now(UTC),
    )  # fmt: skip
    assert result is not None
    return result[1]


def tag_row(session: Session, name: str) -> tuple[int, str, bool, bool]:
    row = session.execute(
        text("SELECT id, facet, multi_label, retired_at IS NOT NULL FROM tags WHERE name = :n"), {"n": name}
    ).one()
    return (row[0], row[1], row[2], row[3])


def axis(i: int) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[i] = 1.0
    return v


def test_a_renamed_tag_keeps_its_labels_human_tags_and_training_data(session: Session) -> None:
    """Renaming retired `praise` and made a new tag: its labels stopped counting, and the fit lost them."""
    version = register_model_version(session.connection(), name=f"fake-rename-{uuid.uuid4().hex[:8]}",
                                     base_model="fake", path=None, dims=DIMS)  # fmt: skip
    praised = [new_item(session, axis(0), model_version_id=version) for _ in range(6)]
    bugs = [new_item(session, axis(1), model_version_id=version) for _ in range(6)]
    for item_id in praised:
        correct(session, item_id, added=["praise"])
    for item_id in bugs:
        correct(session, item_id, added=["bug"])
    praise_id = tag_row(session, "praise")[0]

    saved = load(session, default_with(rename("praise", "compliment")))

    assert [(r.old, r.new, r.tag_id) for r in saved.renamed] == [("praise", "compliment", praise_id)]
    assert tag_row(session, "compliment") == (praise_id, "feedback_type", True, False)
    assert session.scalar(text("SELECT count(*) FROM tags WHERE name = 'praise'")) == 0
    assert [(r["tag"], r["source"]) for r in tags_of_item(session, praised[0])] == [("compliment", "human")]
    assert {i.item_id: i.tags for i in labelled_items(session)}[praised[0]] == ["compliment"]
    found = current_taxonomy(session)
    assert found is not None
    taxonomy = found[1]
    labelled = human_labels(session, version, DIMS)
    assert sum("compliment" in tags for tags in labelled.tags) == 6
    rng = np.random.default_rng(0)
    vectors = {t: rng.normal(size=(1, DIMS)).astype(np.float32) for t in taxonomy.tag_names}
    tagger = fit_tagger(taxonomy, vectors, labelled, FitParams(min_examples=5))
    assert tagger.kinds["feedback_type"] == "supervised"


def test_loading_a_renaming_file_again_or_a_later_version_of_it_renames_nothing(session: Session) -> None:
    item_id = new_item(session)
    correct(session, item_id, added=["praise"])
    data = default_with(rename("praise", "compliment"))
    first = load(session, data)
    assert first.created and len(first.renamed) == 1
    again = load(session, data)
    assert (again.version_id, again.created, again.renamed) == (first.version_id, False, ())

    def add_tag(d: dict[str, Any]) -> None:
        facet(d, "feedback_type")["tags"].append({"name": "praise", "description": "a new tag with the old name"})
        for t in facet(d, "feedback_type")["tags"]:
            t.pop("renamed_from", None)

    later = load(session, default_with(rename("praise", "compliment"), add_tag))
    assert later.created and later.renamed == ()
    assert [r["tag"] for r in tags_of_item(session, item_id)] == ["compliment"], "the new `praise` has no labels"
    back = load(session, data)
    assert back.created and back.renamed == (), "the rename is logged: not done again now `praise` is stored anew"
    assert tag_row(session, "praise")[3], "the new `praise` is retired, not merged"


def test_a_tag_moved_to_another_facet_by_a_rename_takes_its_labels_along(session: Session) -> None:
    item_id = new_item(session)
    correct(session, item_id, added=["praise", "bug"])

    def sentiment(data: dict[str, Any]) -> None:
        data["facets"].append({"name": "sentiment", "applies_to": ["feedback"], "tags": [{"name": "negative"}]})

    load(session, default_with(sentiment, rename("praise", "positive", to_facet="sentiment")))

    assert tag_row(session, "positive")[1:] == ("sentiment", False, False)
    assert {(r["facet"], r["tag"]) for r in tags_of_item(session, item_id)} == {
        ("sentiment", "positive"),
        ("feedback_type", "bug"),
    }
    assert correct(session, item_id, added=["negative"]) == ["bug", "negative"], "single-label now: it displaces"


def test_renaming_onto_a_stored_tag_is_refused_and_writes_nothing(session: Session) -> None:
    item_id = new_item(session)
    correct(session, item_id, added=["praise"])
    load(session, default_with(rename("praise", "compliment")))
    versions = session.scalar(text("SELECT count(*) FROM taxonomy_versions"))

    def bug_renamed_from_usability(data: dict[str, Any]) -> None:
        spec = next(t for t in facet(data, "feedback_type")["tags"] if t["name"] == "bug")
        spec["renamed_from"] = ["usability"]
        facet(data, "feedback_type")["tags"] = [t for t in facet(data, "feedback_type")["tags"]
                                                if t["name"] != "usability"]  # fmt: skip

    with pytest.raises(TaxonomyError, match=r"tag 'bug' cannot take over 'usability' \(renamed_from\): 'bug' is"):
        load(session, default_with(rename("praise", "compliment"), bug_renamed_from_usability))
    assert session.scalar(text("SELECT count(*) FROM taxonomy_versions")) == versions


def test_a_correction_naming_the_old_tag_applies_to_the_renamed_one(session: Session) -> None:
    """A producer not updated yet, or a correction that waited for its item, was refused: "unknown tag(s) praise"."""
    item_id = new_item(session)
    load(session, default_with(rename("praise", "compliment")))

    assert correct(session, item_id, added=["praise", "bug"]) == ["bug", "compliment"]
    assert correct(session, item_id, added=[], removed=["praise"]) == ["bug"]
    sent = session.execute(
        text("SELECT added, removed FROM tag_corrections WHERE item_id = :i ORDER BY id"), {"i": item_id}
    ).all()
    assert [tuple(r) for r in sent] == [(["praise", "bug"], []), ([], ["praise"])], "stored as sent"
