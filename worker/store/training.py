"""SQL for retraining: human-labelled items, vocabulary pairs, and the lock that keeps runs one at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, cast, func, or_, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.types import UserDefinedType

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


# Far longer than a correction's transaction stays open (one ingest batch).
_LONGEST_CORRECTION = timedelta(days=1)


@dataclass(frozen=True)
class ReadPoint:
    """When, and in which snapshot (`pg_snapshot` as text), a retraining run read the labels."""

    time: datetime
    snapshot: str | None


def read_in_one_snapshot(session: Session) -> None:
    """Make every read of the caller's transaction see one snapshot, the one `read_point` returns.

    Call before the transaction's first statement.
    """
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def read_point(session: Session) -> ReadPoint:
    """The caller's transaction's start (the server's `now()`) and its snapshot."""
    row = session.execute(text("SELECT now() AS time, pg_current_snapshot()::text AS snapshot")).one()
    return ReadPoint(row.time, row.snapshot)


def last_run_read(session: Session) -> ReadPoint | None:
    """What the last retraining run that did not fail read (promoted, rejected, or still training).

    A failed run (killed, or crashed) trained nothing, so the labels before it still count toward the next.
    """
    row = session.execute(
        select(ModelVersion.created_at, ModelVersion.read_snapshot)
        .where(ModelVersion.parent_id.is_not(None), ModelVersion.status != "failed")
        .order_by(ModelVersion.created_at.desc())
        .limit(1)
    ).first()
    return ReadPoint(row.created_at, row.read_snapshot) if row else None


def labels_since(session: Session, since: ReadPoint | None) -> int:
    """Human decisions the run that read at `since` did not see (all of them when None).

    A correction stamped (by the server, when its transaction began) after the run's read counts; so does one
    stamped up to `_LONGEST_CORRECTION` before it whose transaction the run's snapshot did not see: it was still
    open, and committed after the read. Transaction ids mean something only in the cluster that gave them; the
    stamp bound keeps a database restored into another cluster from counting long-past labels again, and the
    stamp rule alone counts everything after the read. Rows and runs from before migration 0009 have no ids.
    The label's own `decided_at` is the producer's clock and is not used: one running behind would hide labels.
    """
    query = select(func.count()).select_from(ItemLabel)
    if since is not None:
        stamped = func.coalesce(TagCorrection.applied_at, TagCorrection.received_at)
        counted = stamped > since.time
        if since.snapshot is not None:
            visible = func.pg_visible_in_snapshot(TagCorrection.applied_xid, cast(since.snapshot, _PgSnapshot()))
            unseen = and_(stamped > since.time - _LONGEST_CORRECTION, ~func.coalesce(visible, True))
            counted = or_(counted, unseen)
        query = query.join(TagCorrection, TagCorrection.id == ItemLabel.correction_id).where(counted)
    return int(session.scalar(query) or 0)


class _PgSnapshot(UserDefinedType[str]):
    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "pg_snapshot"


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
