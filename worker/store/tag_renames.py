"""Tags renamed in place by a taxonomy's `renamed_from`, and the old names corrections may still use."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from models import Tag, TagRenameLog
from worker.pipeline.tag_renames import RenamePlan, TagRename, plan_renames
from worker.pipeline.taxonomy import Taxonomy


def plan_taxonomy_renames(session: Session, taxonomy: Taxonomy) -> RenamePlan:
    """The renames `taxonomy` asks for that are not done yet (see `plan_renames`, which raises on conflicts)."""
    if not taxonomy.renames:
        return RenamePlan((), {})
    stored = dict(session.execute(select(Tag.name, Tag.id)).tuples().all())
    done = set(session.execute(select(TagRenameLog.old_name, TagRenameLog.tag_id)).tuples().all())
    return plan_renames(taxonomy.renames, stored=stored, done=done)


def rename_tags(session: Session, renames: tuple[TagRename, ...], *, taxonomy_version_id: int) -> None:
    """Give the tags their new names (ids, and so labels, tags and corrections, stay) and log each rename."""
    for rename in renames:  # new names are free and old names distinct (checked), so no order can collide
        session.execute(update(Tag).where(Tag.id == rename.tag_id).values(name=rename.new))
    if renames:
        session.add_all(
            TagRenameLog(tag_id=r.tag_id, old_name=r.old, new_name=r.new, taxonomy_version_id=taxonomy_version_id)
            for r in renames
        )
        session.flush()


def current_names_of_renamed(session: Session) -> dict[str, str]:
    """Old name -> the tag's name now, for old names no stored tag has any more (the latest rename wins)."""
    latest = (
        select(TagRenameLog.old_name, func.max(TagRenameLog.id).label("id")).group_by(TagRenameLog.old_name).subquery()
    )
    reused = aliased(Tag)
    rows = session.execute(
        select(latest.c.old_name, Tag.name)
        .join(TagRenameLog, TagRenameLog.id == latest.c.id)
        .join(Tag, Tag.id == TagRenameLog.tag_id)
        .where(~select(reused.id).where(reused.name == latest.c.old_name).exists())
    )
    return dict(rows.tuples().all())
