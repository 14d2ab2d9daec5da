"""Embeddings: one vector per (item, model version)."""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pgvector.sqlalchemy import Vector
from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, SmallInteger, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class Embedding(Base):
    """A normalized vector of an item's text under one model version.

    The column has no fixed dimension so that model versions of different sizes can live side by side; each
    version gets its own partial HNSW index with a cast to its dimension (see `worker.store.model_versions`).
    """

    __tablename__ = "embeddings"

    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id"), primary_key=True)
    vector: Mapped[np.ndarray] = mapped_column(Vector())
    chunks_total: Mapped[int] = mapped_column(SmallInteger, default=1)
    chunks_used: Mapped[int] = mapped_column(SmallInteger, default=1)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
