"""The tags items carry: model assignments (never over a human decision) and human corrections."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Embedding, Item, ItemLabel, ItemTag, ItemTagging, Tag, TagCorrection
from worker.errors import CorrectionError
from worker.pipeline.corrections import ITEM_KINDS, CorrectionPlan, TagInfo, plan_against_later_decisions
from worker.store.tag_renames import current_names_of_renamed
from worker.store.tags import current_taxonomy


@dataclass(frozen=True)
class ModelTag:
    item_id: int
    tag_id: int
    score: float
    head: str


# Model tags go in only where no person decided about that tag, nor chose another tag of a single-label facet.
_INSERT_MODEL_TAGS = text(
    """
    INSERT INTO item_tags (item_id, tag_id, score, source, head, tagger_id, model_version_id)
    SELECT t.item_id, t.tag_id, t.score, 'model', t.head, :tagger_id, :model_version_id
    FROM unnest(CAST(:item_ids AS bigint[]), CAST(:tag_ids AS integer[]), CAST(:scores AS float8[]),
                CAST(:heads AS text[])) AS t(item_id, tag_id, score, head)
    JOIN tags tt ON tt.id = t.tag_id AND tt.retired_at IS NULL
    WHERE NOT EXISTS (SELECT 1 FROM item_labels l WHERE l.item_id = t.item_id AND l.tag_id = t.tag_id)
      AND (tt.multi_label OR NOT EXISTS (
            SELECT 1 FROM item_labels l JOIN tags lt ON lt.id = l.tag_id
            WHERE l.item_id = t.item_id AND l.present AND lt.facet = tt.facet))
    ON CONFLICT (item_id, tag_id) DO NOTHING
    """
)

_UPSERT_TAGGING = text(
    """
    INSERT INTO item_tagging (item_id, tagger_id, margin, tagged_at)
    SELECT t.item_id, :tagger_id, t.margin, now()
    FROM unnest(CAST(:item_ids AS bigint[]), CAST(:margins AS float8[])) AS t(item_id, margin)
    ON CONFLICT (item_id) DO UPDATE SET tagger_id = excluded.tagger_id, margin = excluded.margin, tagged_at = now()
    """
)


def replace_model_tags(
    session: Session,
    *,
    item_ids: Sequence[int],
    margins: Sequence[float | None],
    tags: Sequence[ModelTag],
    tagger_id: int,
    model_version_id: int,
) -> None:
    """Set the model's tags of these items (human tags untouched) and their review margins."""
    if not item_ids:
        return
    connection = session.connection()
    # A correction holds its item FOR UPDATE until it commits. Without waiting for it here, the insert below could
    # read the item's labels from before it and put a model tag beside (or back over) the person's decision.
    connection.execute(select(Item.id).where(Item.id.in_(item_ids)).order_by(Item.id).with_for_update(read=True))
    connection.execute(delete(ItemTag).where(ItemTag.item_id.in_(item_ids), ItemTag.source == "model"))
    if tags:
        connection.execute(
            _INSERT_MODEL_TAGS,
            {
                "tagger_id": tagger_id,
                "model_version_id": model_version_id,
                "item_ids": [t.item_id for t in tags],
                "tag_ids": [t.tag_id for t in tags],
                "scores": [t.score for t in tags],
                "heads": [t.head for t in tags],
            },
        )
    connection.execute(_UPSERT_TAGGING, {"tagger_id": tagger_id, "item_ids": list(item_ids), "margins": list(margins)})


def items_to_retag(
    session: Session, *, model_version_id: int, tagger_id: int, after: int, limit: int
) -> list[Row[Any]]:
    """(item_id, kind, vector) of the version's items, past `after` in id order, not last tagged by `tagger_id`."""
    return list(
        session.execute(
            select(Embedding.item_id, Item.kind, Embedding.vector)
            .join(Item, Item.id == Embedding.item_id)
            .outerjoin(ItemTagging, ItemTagging.item_id == Embedding.item_id)
            .where(Embedding.model_version_id == model_version_id, Embedding.item_id > after)
            .where(ItemTagging.tagger_id.is_distinct_from(tagger_id))
            .order_by(Embedding.item_id)
            .limit(limit)
        ).all()
    )


def tagged_by_others_since(session: Session, *, model_version_id: int, tagger_id: int, since: datetime) -> bool:
    """Whether an item of the version was tagged by another tagger at `since` or later (by `tagged_at`)."""
    query = (
        select(ItemTagging.item_id)
        .join(Embedding, and_(Embedding.item_id == ItemTagging.item_id, Embedding.model_version_id == model_version_id))
        .where(ItemTagging.tagged_at >= since, ItemTagging.tagger_id.is_distinct_from(tagger_id))
        .limit(1)
    )
    return session.execute(query).first() is not None


def tag_infos(session: Session) -> dict[str, tuple[int, TagInfo]]:
    """Every tag, retired ones marked (a correction may take those off an item): name -> (id, facet info).

    The kinds a facet applies to are in the current taxonomy document only, not in `tags`: retired tags are in no
    facet, and keep the default (both kinds), since they can only be taken off.
    """
    current = current_taxonomy(session)
    applies = {} if current is None else {t: f.applies_to for t, f in current[1].facet_of().items()}
    rows = session.execute(select(Tag.name, Tag.id, Tag.facet, Tag.multi_label, Tag.retired_at))
    return {
        r.name: (r.id, TagInfo(r.facet, r.multi_label, retired=r.retired_at is not None,
                               applies_to=applies.get(r.name, ITEM_KINDS)))
        for r in rows
    }  # fmt: skip


def decided_after(session: Session, item_id: int, moment: datetime, event_id: uuid.UUID) -> set[str]:
    """Tags of the item a person decided on after the correction (`moment`, `event_id`).

    Of two decisions at the same moment, the one from the correction with the greater event id is the later,
    the rule items follow too: so the outcome does not depend on which arrived first.
    """
    later = or_(ItemLabel.decided_at > moment, and_(ItemLabel.decided_at == moment, TagCorrection.event_id > event_id))
    rows = session.scalars(
        select(Tag.name)
        .join(ItemLabel, ItemLabel.tag_id == Tag.id)
        .join(TagCorrection, TagCorrection.id == ItemLabel.correction_id)
        .where(ItemLabel.item_id == item_id, later)
    )
    return set(rows)


def item_tag_names(session: Session, item_id: int) -> set[str]:
    rows = session.scalars(select(Tag.name).join(ItemTag, ItemTag.tag_id == Tag.id).where(ItemTag.item_id == item_id))
    return set(rows)


def apply_correction(
    session: Session,
    *,
    event_id: uuid.UUID,
    item_id: int,
    added: list[str],
    removed: list[str],
    actor: str,
    corrected_at: datetime,
    infos: dict[str, tuple[int, TagInfo]] | None = None,
    renamed: dict[str, str] | None = None,
) -> tuple[list[str], list[str]] | None:
    """Record a person's correction and make it the item's tags at once.

    A tag named by an old name (`renamed_from` in the taxonomy; `renamed` maps it to the tag's name now) counts as
    the renamed tag; the correction is stored with the names it was sent with.

    Returns:
        Tags before and after, or None when this event was applied before (a redelivery).

    Raises:
        CorrectionError: see `plan_correction`; nothing is written then.
    """
    infos = infos if infos is not None else tag_infos(session)
    renamed = renamed if renamed is not None else current_names_of_renamed(session)
    # Lock the item's tags so two corrections of one item apply one after the other.
    kind = session.scalar(select(Item.kind).where(Item.id == item_id).with_for_update())
    if kind is None:
        raise CorrectionError(f"no item has id {item_id}; `tagworker tag show` takes kind/external_id")
    plan = plan_against_later_decisions(
        kind=kind,
        current=item_tag_names(session, item_id),
        added=[renamed.get(t, t) for t in added],
        removed=[renamed.get(t, t) for t in removed],
        tags={n: i for n, (_, i) in infos.items()},
        decided=decided_after(session, item_id, corrected_at, event_id),
    )
    correction_id = session.scalar(
        insert(TagCorrection)
        .values(event_id=event_id, item_id=item_id, added=added, removed=removed, actor=actor,
                corrected_at=corrected_at, tags_before=list(plan.before), tags_after=list(plan.after),
                applied_at=text("now()"))
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(TagCorrection.id)
    )  # fmt: skip
    if correction_id is None:
        return None
    ids = {name: infos[name][0] for name in plan.labels}
    _record_labels(session, item_id=item_id, plan=plan, ids=ids, actor=actor, correction_id=correction_id,
                   decided_at=corrected_at)  # fmt: skip
    _apply_plan(session, item_id=item_id, plan=plan, ids=ids)
    return list(plan.before), list(plan.after)


def _record_labels(
    session: Session,
    *,
    item_id: int,
    plan: CorrectionPlan,
    ids: dict[str, int],
    actor: str,
    correction_id: int,
    decided_at: datetime,
) -> None:
    """The person's decision per tag (present or absent), the training data of retraining; the latest wins."""
    if not plan.labels:  # every tag of this correction was decided again later
        return
    labels = [
        {"item_id": item_id, "tag_id": ids[name], "present": present, "actor": actor,
         "correction_id": correction_id, "decided_at": decided_at}
        for name, present in plan.labels.items()
    ]  # fmt: skip
    statement = insert(ItemLabel).values(labels)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["item_id", "tag_id"],
            set_={c: statement.excluded[c] for c in ("present", "actor", "correction_id", "decided_at")},
        )
    )


def _apply_plan(session: Session, *, item_id: int, plan: CorrectionPlan, ids: dict[str, int]) -> None:
    """Take the plan's tags off the item and set its added tags as human ones (over any model tag)."""
    off = [ids[name] for name in plan.take_off]
    if off:
        session.execute(delete(ItemTag).where(ItemTag.item_id == item_id, ItemTag.tag_id.in_(off)))
    if not plan.add:
        return
    human = insert(ItemTag).values(
        [{"item_id": item_id, "tag_id": ids[n], "score": 1.0, "source": "human", "head": "human"} for n in plan.add]
    )
    fields = {"score": 1.0, "source": "human", "head": "human", "tagger_id": None, "model_version_id": None}
    session.execute(
        human.on_conflict_do_update(index_elements=["item_id", "tag_id"], set_={**fields, "tagged_at": text("now()")})
    )
