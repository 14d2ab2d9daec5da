"""Items: content and feedback, one row per (kind, producer id)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Item(Base):
    """A content piece or a feedback message; the latest event for its producer id wins."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("kind", "external_id", name="uq_items_kind_external_id"),
        CheckConstraint("kind IN ('content', 'feedback')", name="kind"),
        Index("ix_items_kind_received_at", "kind", "received_at"),
        # Hybrid search's full-text side; the expression must match worker.store.search.FTS_DOCUMENT.
        Index(
            "ix_items_fts",
            text("to_tsvector('english', coalesce(title, '') || ' ' || text)"),
            postgresql_using="gin",
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(256))
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    text: Mapped[str] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str | None] = mapped_column(String(2048), index=True)
    campaign: Mapped[str | None] = mapped_column(String(2048))
    language: Mapped[str | None] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(16))
    rating: Mapped[float | None] = mapped_column(Float)
    customer_ref: Mapped[str | None] = mapped_column(String(2048))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ReplacedEvent(Base):
    """An event id that wrote an item before a newer event replaced it (a database trigger records it), so a
    redelivery of it is known as a duplicate rather than taken for an edit."""

    __tablename__ = "replaced_events"

    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), index=True)
    content_sha256: Mapped[str] = mapped_column(String(64))
    replaced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
