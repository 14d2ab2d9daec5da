"""Vocabulary pairs for retraining: two phrases and how alike the team says they are."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, DateTime, Float, Identity, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class TrainingPair(Base):
    """`{"a": "CAC", "b": "customer acquisition cost", "score": 1.0}`; re-adding a pair updates its score."""

    __tablename__ = "training_pairs"
    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 1", name="score"),
        UniqueConstraint("a", "b"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    a: Mapped[str] = mapped_column(Text)
    b: Mapped[str] = mapped_column(Text)
    score: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(1024))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
