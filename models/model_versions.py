"""Model versions: the stock model and every fine-tuned candidate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, DateTime, Float, ForeignKey, Identity, Index, Integer, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

MODEL_STATUSES = ("training", "candidate", "active", "retired", "failed", "rejected")


class ModelVersion(Base):
    """One embedding model; exactly one row is `active` (a partial unique index keeps it so)."""

    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(f"status IN {MODEL_STATUSES!r}", name="status"),
        Index("uq_model_versions_one_active", "status", unique=True, postgresql_where=text("status = 'active'")),
    )

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    base_model: Mapped[str] = mapped_column(String(512))
    path: Mapped[str | None] = mapped_column(Text)
    dims: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    activated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Retraining: the version it was fine-tuned from, what it was trained on, how it went.
    parent_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("model_versions.id"))
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
    seconds: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str | None] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The snapshot (`pg_snapshot` as text) a retraining run read its labels in; see `labels_since`.
    read_snapshot: Mapped[str | None] = mapped_column(Text)
    # Re-embedding of stored items after this version became active: {"total", "done", "started_at", ...}.
    backfill: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default=text("'{}'::jsonb"))
