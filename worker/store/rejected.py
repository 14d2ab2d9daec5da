"""Rejected events: one row per broker message, counting redeliveries; corrections waiting for their item."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import RejectedEvent
from worker.locks import AdvisoryLock
from worker.pipeline.validate import Rejection

ARRIVALS_LOCK = int(AdvisoryLock.ITEM_ARRIVALS)


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
                "item_kind": r.waits_for[0] if r.waits_for else None,
                "item_external_id": r.waits_for[1] if r.waits_for else None,
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
                "item_kind": statement.excluded.item_kind,
                "item_external_id": statement.excluded.item_external_id,
                "last_seen_at": func.now(),
            },
        )
    )


def hold_item_arrivals(session: Session, *, exclusive: bool) -> None:
    """Take the item-arrivals lock until the transaction ends: shared to store items, exclusive to leave a
    correction waiting for an item.

    Without it, a batch storing the item and one rejecting its correction could run at once: neither sees the
    other's uncommitted row, and the correction would wait for an item that is already there. Take it before any
    row lock of the transaction, so that it cannot close a cycle with them.
    """
    function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
    session.execute(text(f"SELECT {function}(:key)"), {"key": ARRIVALS_LOCK})


@dataclass(frozen=True)
class WaitingCorrection:
    """A rejected `tag.corrected` event waiting for its item; `raw` is the event as JSON."""

    id: int
    message_id: str
    raw: str


_WAITING = text(
    """
    SELECT r.id, r.message_id, r.raw FROM rejected_events r
    JOIN unnest(CAST(:kinds AS text[]), CAST(:external_ids AS text[])) AS w(kind, external_id)
      ON r.item_kind = w.kind AND r.item_external_id = w.external_id
    WHERE r.item_kind IS NOT NULL
    ORDER BY r.id
    FOR UPDATE OF r
    """
)


def waiting_corrections(session: Session, refs: Sequence[tuple[str, str]]) -> list[WaitingCorrection]:
    """The corrections waiting for these items ((kind, external id) pairs), locked until the caller commits."""
    if not refs:
        return []
    unique = sorted(set(refs))
    rows = session.execute(_WAITING, {"kinds": [k for k, _ in unique], "external_ids": [x for _, x in unique]}).tuples()
    return [WaitingCorrection(id_, message_id, raw) for id_, message_id, raw in rows]


def forget_rejections(session: Session, ids: Sequence[int]) -> None:
    """Delete rejections that no longer stand: corrections applied once their item arrived."""
    if ids:
        session.execute(delete(RejectedEvent).where(RejectedEvent.id.in_(list(ids))))


def stop_waiting(session: Session, rejection_id: int, reason: str) -> None:
    """A waiting correction whose item arrived but that failed again: it stays rejected, for `reason`."""
    session.execute(
        update(RejectedEvent)
        .where(RejectedEvent.id == rejection_id)
        .values(reason=storable(reason), item_kind=None, item_external_id=None, last_seen_at=func.now())
    )


_ARRIVED = text(
    """
    SELECT DISTINCT r.item_kind, r.item_external_id FROM rejected_events r
    JOIN items i ON i.kind = r.item_kind AND i.external_id = r.item_external_id
    WHERE r.item_kind IS NOT NULL
    LIMIT :limit
    """
)


def arrived_items_with_waiting_corrections(session: Session, *, limit: int = 1000) -> list[tuple[str, str]]:
    """Items stored while corrections still wait for them: stored by a worker from before corrections could wait
    (a rolling upgrade), which does not look for them."""
    return [(kind, external_id) for kind, external_id in session.execute(_ARRIVED, {"limit": limit}).tuples()]
