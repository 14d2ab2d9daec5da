"""SQL for retraining: human-labelled items, vocabulary pairs, and the lock that keeps runs one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Item, ItemLabel, ModelVersion, Tag, TagCorrection, TrainingPair
from worker.locks import AdvisoryLock
from worker.pipeline.training_pairs import ScoredPair

RETRAIN_LOCK = int(AdvisoryLock.RETRAINING)  # one retraining run at a time, across all workers


@dataclass(frozen=True)
class LabelledItem:
    """An item with the tags people confirmed on it."""

    item_id: int
    text: str
    tags: list[str]


def labelled_items(session: Session) -> list[LabelledItem]:
    """Items with at least one present human label on a current tag, oldest first."""
    rows = session.execute(
        select(Item.id, Item.text, func.array_agg(Tag.name).label("tags"))
        .join(ItemLabel, ItemLabel.item_id == Item.id)
        .join(Tag, Tag.id == ItemLabel.tag_id)
        .where(ItemLabel.present, Tag.retired_at.is_(None))
        .group_by(Item.id)
        .order_by(Item.id)
    ).all()
    return [LabelledItem(int(r.id), r.text, sorted(r.tags)) for r in rows]


def transaction_time(session: Session) -> datetime:
    """The server's `now()` in the caller's transaction: when it began, so before any of its reads.

    `labels_since` of this time counts every label applied by a transaction that began later, whether or not
    the reads saw it; a correction whose transaction was already open then is stamped earlier and not counted.
    """
    return session.execute(select(func.now())).scalar_one()


def labels_since(session: Session, since: datetime | None) -> int:
    """Human decisions applied after `since`, a server timestamp (all of them when None).

    Compared by when the server applied the correction behind each label: the label's `decided_at` is the
    producer's clock, and one running behind would hide its labels from the count.
    """
    query = select(func.count()).select_from(ItemLabel)
    if since is not None:
        applied = func.coalesce(TagCorrection.applied_at, TagCorrection.received_at)
        query = query.join(TagCorrection, TagCorrection.id == ItemLabel.correction_id).where(applied > since)
    return int(session.scalar(query) or 0)


def scored_pairs(session: Session) -> list[ScoredPair]:
    rows = session.execute(select(TrainingPair.a, TrainingPair.b, TrainingPair.score).order_by(TrainingPair.id))
    return [ScoredPair(r.a, r.b, float(r.score)) for r in rows]


def add_pairs(session: Session, pairs: list[ScoredPair], *, source: str) -> int:
    """Insert vocabulary pairs; a pair already stored gets the new score. Returns how many distinct pairs were written.

    A pair given twice (same a and b) is written once, with the score given last: one INSERT ... ON CONFLICT
    cannot update the same row twice.
    """
    last_wins = {(p.a, p.b): p for p in pairs}
    if not last_wins:
        return 0
    rows = [{"a": p.a, "b": p.b, "score": p.score, "source": source} for p in last_wins.values()]
    statement = insert(TrainingPair).values(rows)
    statement = statement.on_conflict_do_update(
        index_elements=["a", "b"], set_={"score": statement.excluded.score, "source": statement.excluded.source}
    )
    session.execute(statement)
    return len(rows)


def try_retrain_lock(connection: Connection) -> bool:
    """Session-level lock held for the whole run (training outlives any one transaction); False if taken."""
    return bool(connection.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": RETRAIN_LOCK}))


def unsaved_failures(session: Session) -> tuple[list[str], set[str]]:
    """Names of failed candidates that record no directory, and every directory some version records.

    A run that died after saving its model (killed, or its database went away before the verdict) leaves a
    directory under its candidate's name that no row points at. The paths let the caller spare one an operator
    registered since (`tagworker model promote DIR`).
    """
    names = session.scalars(
        select(ModelVersion.name).where(
            ModelVersion.status == "failed", ModelVersion.path.is_(None), ModelVersion.parent_id.is_not(None)
        )
    )
    paths = session.scalars(select(ModelVersion.path).where(ModelVersion.path.is_not(None)))
    return list(names), {str(p) for p in paths}
