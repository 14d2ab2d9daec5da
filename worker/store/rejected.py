"""Rejected events: one row per broker message, counting redeliveries."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import RejectedEvent
from worker.pipeline.validate import Rejection


def storable(text: str | None, limit: int = 4000) -> str | None:
    """Text PostgreSQL accepts: NUL and lone surrogates escaped, length capped."""
    if text is None:
        return None
    text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text[:limit]


# A rejected payload is kept for diagnosis, not replay: past this many characters (ten times the largest text an
# event may carry, by default) only its start is kept, with a note of what was cut.
MAX_RAW_CHARS = 1_000_000


def capped_raw(raw: str, limit: int = MAX_RAW_CHARS) -> str:
    """The payload text, cut at `limit` characters with a note saying how many were left out."""
    if len(raw) <= limit:
        return raw
    return f"{raw[:limit]}... [{len(raw) - limit} more characters not kept]"


def record_rejections(session: Session, rejections: Sequence[Rejection]) -> None:
    """Record each rejection; a message seen again bumps `attempts` and keeps the latest reason."""
    if not rejections:
        return
    unique = {r.message_id: r for r in rejections}  # one row per message, even if a batch names it twice
    statement = insert(RejectedEvent).values(
        [
            {
                "message_id": storable(r.message_id, 256),
                "event_id": r.event_id,
                "kind": storable(r.kind, 64),
                "status": r.status,
                "reason": storable(r.reason),
                "raw": capped_raw(r.raw),
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
