"""Rejected events: Redis has no dead-letter queue, so this table is it."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

REJECTION_STATUSES = ("invalid", "failed")


class RejectedEvent(Base):
    """A message that was not stored as an item: `invalid` (never retried) or `failed` (after retries).

    Keyed by the broker message id, so a redelivered message updates its row instead of adding one. A
    `tag.corrected` event that names an item not stored yet waits here: `item_kind` and `item_external_id` name the
    item (NULL on every other row), and the batch that stores the item applies the correction and deletes the row.
    """

    __tablename__ = "rejected_events"
    __table_args__ = (
        CheckConstraint(f"status IN {REJECTION_STATUSES!r}", name="status"),
        # Only waiting corrections are in it: an ingest batch looks up its items without reading other rejections.
        Index(
            "ix_rejected_events_waiting_item",
            "item_kind",
            "item_external_id",
            postgresql_where=text("item_kind IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(256), unique=True)
    event_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True), index=True)
    kind: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    # The payload as it arrived, as ASCII-escaped JSON text: it may hold what jsonb refuses (NUL, lone surrogates).
    raw: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    item_kind: Mapped[str | None] = mapped_column(String(16))
    item_external_id: Mapped[str | None] = mapped_column(String(256))
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
