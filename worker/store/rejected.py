"""Rejected events: one row per broker message, counting redeliveries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import RejectedEvent
from worker.pipeline.validate import Rejection


def record_rejections(session: Session, rejections: Sequence[Rejection]) -> None:
    """Record each rejection; a message seen again bumps `attempts` and keeps the latest reason."""
    if not rejections:
        return
    unique = {r.message_id: r for r in rejections}  # one row per message, even if a batch names it twice
    statement = insert(RejectedEvent).values(
        [
            {
                "message_id": r.message_id,
                "event_id": r.event_id,
                "kind": r.kind,
                "status": r.status,
                "reason": r.reason[:4000],
                "raw": r.raw,
                "attempts": 1,
            }
            for r in unique.values()
        ]
    )
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[RejectedEvent.message_id],
            set_={
                "attempts": RejectedEvent.attempts + 1,
                "reason": statement.excluded.reason,
                "status": statement.excluded.status,
                "last_seen_at": func.now(),
            },
        )
    )
