"""Tag corrections: a person's decision about an item's tags, stored as it arrived."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Identity, String, Text, func
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import UserDefinedType

from models.base import Base


class Xid8(UserDefinedType[int]):
    """PostgreSQL's 64-bit transaction id."""

    cache_ok = True

    def get_col_spec(self, **_: Any) -> str:
        return "xid8"


class TagCorrection(Base):
    """Tags a person added to or removed from an item; `applied_at` is set once the tagger acted on it."""

    __tablename__ = "tag_corrections"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), index=True)
    added: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    removed: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    actor: Mapped[str] = mapped_column(String(2048))
    tags_before: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    tags_after: Mapped[list[str] | None] = mapped_column(ARRAY(Text))
    corrected_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    applied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The transaction that stored it, for `labels_since` (NULL on rows stored before migration 0009).
    applied_xid: Mapped[int | None] = mapped_column(Xid8(), server_default=func.pg_current_xact_id())
