"""Taxonomy versions, tags and taggers in PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Embedding, ItemLabel, Tag, TagCorrection, Tagger, TaxonomyVersion
from worker.locks import AdvisoryLock
from worker.pipeline.tag import Tagger as FittedTagger
from worker.pipeline.tag import dump_tagger, load_tagger
from worker.pipeline.tag_fit import LabelledSet
from worker.pipeline.tag_renames import TagRename
from worker.pipeline.taxonomy import Taxonomy, parse_stored_taxonomy
from worker.store.tag_renames import plan_taxonomy_renames, rename_tags
from worker.store.training import ReadPoint, labels_since

TAGGING_LOCK = int(AdvisoryLock.TAGGER_FIT)  # one tagger fit at a time across all workers


@dataclass(frozen=True)
class StoredTagger:
    id: int
    taxonomy_version_id: int
    labels_through: int
    tagger: FittedTagger


@dataclass(frozen=True)
class SavedTaxonomy:
    """A stored taxonomy version; `created` is False when it was the current one already (nothing written)."""

    version_id: int
    created: bool
    renamed: tuple[TagRename, ...] = ()
    unmatched_renames: dict[str, tuple[str, ...]] = field(default_factory=dict)


def save_taxonomy(session: Session, taxonomy: Taxonomy) -> SavedTaxonomy:
    """Store a taxonomy version and its tags; tags it drops are retired (their labels stay).

    A tag's `renamed_from` renames the stored tag in place first, so its labels, tags and corrections carry over.
    The same file loaded twice is one version. Loads run one at a time.

    Raises:
        TaxonomyError: a `renamed_from` would merge two stored tags (see `plan_renames`); nothing is written.
    """
    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(AdvisoryLock.TAXONOMY_SEED)})
    current = session.execute(
        select(TaxonomyVersion.id, TaxonomyVersion.sha256).order_by(TaxonomyVersion.id.desc()).limit(1)
    ).first()
    if current is not None and current.sha256 == taxonomy.sha256:
        return SavedTaxonomy(current.id, False)
    plan = plan_taxonomy_renames(session, taxonomy)
    version = TaxonomyVersion(name=taxonomy.name, sha256=taxonomy.sha256, document=taxonomy.document())
    session.add(version)
    session.flush()
    rename_tags(session, plan.renames, taxonomy_version_id=version.id)
    rows = [
        {"name": tag.name, "facet": facet.name, "multi_label": facet.multi_label, "description": tag.description,
         "taxonomy_version_id": version.id, "retired_at": None}
        for facet in taxonomy.facets
        for tag in facet.tags
    ]  # fmt: skip
    statement = insert(Tag).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["name"],
            set_={c: statement.excluded[c] for c in ("facet", "multi_label", "description", "taxonomy_version_id")}
            | {"retired_at": None},
        )
    )
    session.execute(
        update(Tag)
        .where(Tag.taxonomy_version_id != version.id, Tag.retired_at.is_(None))
        .values(retired_at=datetime.now(UTC))
    )
    return SavedTaxonomy(version.id, True, plan.renames, plan.unmatched)


def current_taxonomy(session: Session) -> tuple[int, Taxonomy] | None:
    """The newest taxonomy version, or None when none was loaded."""
    row = session.execute(
        select(TaxonomyVersion.id, TaxonomyVersion.document).order_by(TaxonomyVersion.id.desc()).limit(1)
    ).first()
    return None if row is None else (row.id, parse_stored_taxonomy(row.document))


def tag_ids(session: Session) -> dict[str, int]:
    """Names of the tags of the current taxonomy -> ids."""
    return dict(session.execute(select(Tag.name, Tag.id).where(Tag.retired_at.is_(None))).tuples().all())


def latest_tagger(session: Session, model_version_id: int, *, known_id: int | None = None) -> StoredTagger | None:
    """The newest tagger for a model version; its heads are only read when its id differs from `known_id`."""
    row = session.execute(
        select(Tagger.id, Tagger.taxonomy_version_id, Tagger.labels_through)
        .where(Tagger.model_version_id == model_version_id)
        .order_by(Tagger.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    if row.id == known_id:
        return StoredTagger(row.id, row.taxonomy_version_id, row.labels_through, FittedTagger(heads=()))
    state = session.scalar(select(Tagger.state).where(Tagger.id == row.id))
    assert state is not None
    return StoredTagger(row.id, row.taxonomy_version_id, row.labels_through, load_tagger(state))


def save_tagger(
    session: Session,
    tagger: FittedTagger,
    *,
    taxonomy_version_id: int,
    model_version_id: int,
    labels_through: int,
    labels_read: ReadPoint,
    labelled_items: int,
    seconds: float,
) -> int:
    row = Tagger(
        taxonomy_version_id=taxonomy_version_id,
        model_version_id=model_version_id,
        heads=tagger.kinds,
        labels_through=labels_through,
        labels_snapshot=labels_read.snapshot,
        fitted_at=labels_read.time,
        labelled_items=labelled_items,
        seconds=seconds,
        state=dump_tagger(tagger),
    )
    session.add(row)
    session.flush()
    return row.id


def last_correction_id(session: Session) -> int:
    return session.scalar(select(func.coalesce(func.max(TagCorrection.id), 0))) or 0


def saw_every_label(session: Session, tagger_id: int) -> bool:
    """Whether the tagger's fit read every human label there is now.

    By the snapshot the fit read in (`labels_since`): a correction with a lower id than the newest it read may
    have committed after it. A tagger from before migration 0010 has no snapshot: the newest id decides.
    """
    row = session.execute(
        select(Tagger.fitted_at, Tagger.labels_snapshot, Tagger.labels_through).where(Tagger.id == tagger_id)
    ).one()
    if row.labels_snapshot is None:
        return bool(row.labels_through >= last_correction_id(session))
    return labels_since(session, ReadPoint(row.fitted_at, row.labels_snapshot)) == 0


def human_labels(session: Session, model_version_id: int, dims: int) -> LabelledSet:
    """Items people decided about (present or absent labels on current tags), with their vectors under the version.

    Each item comes with the tags a person gave it and those a person took off it or said it has not.
    """
    decided = (
        select(
            ItemLabel.item_id,
            func.array_agg(Tag.name).filter(ItemLabel.present).label("present"),
            func.array_agg(Tag.name).filter(~ItemLabel.present).label("absent"),
        )
        .join(Tag, Tag.id == ItemLabel.tag_id)
        .where(Tag.retired_at.is_(None))
        .group_by(ItemLabel.item_id)
        .subquery()
    )
    rows = session.execute(
        select(Embedding.vector, decided.c.present, decided.c.absent)
        .join(decided, decided.c.item_id == Embedding.item_id)
        .where(Embedding.model_version_id == model_version_id)
        .order_by(Embedding.item_id)
    ).all()
    if not rows:
        return LabelledSet.empty(dims)
    vectors = np.stack([np.asarray(r.vector, dtype=np.float32) for r in rows])
    tags = [frozenset(r.present or ()) for r in rows]
    return LabelledSet(vectors, tags, [frozenset(r.absent or ()) for r in rows])


def try_fit_lock(session: Session, *, wait: bool = False) -> bool:
    """Take the transaction-scoped lock that keeps tagger fits one at a time; False if another holds it.

    With `wait`, block until the other fit commits (a fit takes seconds) instead of giving up.
    """
    if wait:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": TAGGING_LOCK})
        return True
    return bool(session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": TAGGING_LOCK}))
