"""Feedback clusters: runs, themes with a stable id, each item's current theme, and splits and merges."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base

RUN_STATUSES = ("running", "succeeded", "failed", "skipped")


class ClusterRun(Base):
    """One full clustering run with its parameters and outcome."""

    __tablename__ = "cluster_runs"
    __table_args__ = (CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    model_version_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("model_versions.id"))
    params: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)
    items: Mapped[int] = mapped_column(Integer, default=0)
    clusters: Mapped[int] = mapped_column(Integer, default=0)
    noise_share: Mapped[float | None] = mapped_column(Float)
    seconds: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# A name is one trimmed line, set with who gave it and when; all three null: the automatic label (migration 0015).
THEME_NAME_CHECK = (
    "(name IS NULL AND named_by IS NULL AND named_at IS NULL) OR (name IS NOT NULL AND named_by IS NOT NULL "
    "AND named_at IS NOT NULL AND name <> '' AND name = btrim(name) AND name !~ '[\\x01-\\x1f]')"
)


class Cluster(Base):
    """A theme. Its id survives re-runs when a new run's cluster matches it; `retired_at` when none does.

    `label` is the automatic label, rewritten by every run; `name` is a person's, and runs never touch it.
    """

    __tablename__ = "clusters"
    __table_args__ = (CheckConstraint(THEME_NAME_CHECK, name="name"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id"))
    first_run_id: Mapped[int] = mapped_column(Integer, ForeignKey("cluster_runs.id"))
    last_run_id: Mapped[int] = mapped_column(Integer, ForeignKey("cluster_runs.id"))
    label: Mapped[str] = mapped_column(String(256))
    keywords: Mapped[list[str]] = mapped_column(ARRAY(Text))
    representative_item_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger))
    size: Mapped[int] = mapped_column(Integer)
    centroid: Mapped[np.ndarray] = mapped_column(Vector())
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    name: Mapped[str | None] = mapped_column(String(256))
    named_by: Mapped[str | None] = mapped_column(String(2048))
    named_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ClusterMember(Base):
    """An item's current theme (`cluster_id` null = noise), from a run or assigned live between runs."""

    __tablename__ = "cluster_members"
    __table_args__ = (CheckConstraint("method IN ('run', 'live')", name="method"),)

    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    cluster_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("clusters.id"), index=True)
    similarity: Mapped[float] = mapped_column(Float)
    method: Mapped[str] = mapped_column(String(8))
    run_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("cluster_runs.id"))
    assigned_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ClusterLineage(Base):
    """How a run's clusters relate to the previous run's: continued, new, split, merged, retired."""

    __tablename__ = "cluster_lineage"
    __table_args__ = (CheckConstraint("event IN ('continued', 'new', 'split', 'merged', 'retired')", name="event"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    run_id: Mapped[int] = mapped_column(Integer, ForeignKey("cluster_runs.id"), index=True)
    cluster_id: Mapped[int] = mapped_column(Integer, ForeignKey("clusters.id"))
    event: Mapped[str] = mapped_column(String(16))
    related_cluster_ids: Mapped[list[int]] = mapped_column(ARRAY(Integer), default=list)
