"""Counts for `tagworker status`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Embedding, Item, ModelVersion, RejectedEvent, TagCorrection


def pipeline_counts(session: Session) -> dict[str, Any]:
    """Items by kind, vectors per model version, rejections by status, corrections, active model."""
    items = dict(session.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())
    vectors = dict(
        session.execute(
            select(ModelVersion.name, func.count(Embedding.item_id))
            .join(Embedding, Embedding.model_version_id == ModelVersion.id, isouter=True)
            .group_by(ModelVersion.name)
        ).all()
    )
    rejected = dict(session.execute(select(RejectedEvent.status, func.count()).group_by(RejectedEvent.status)).all())
    active = session.scalar(select(ModelVersion.name).where(ModelVersion.status == "active"))
    return {
        "items": {"content": items.get("content", 0), "feedback": items.get("feedback", 0)},
        "embedded": vectors.get(active, 0) if active else 0,
        "embeddings_by_model": vectors,
        "rejected": {"invalid": rejected.get("invalid", 0), "failed": rejected.get("failed", 0)},
        "tag_corrections": session.scalar(select(func.count()).select_from(TagCorrection)) or 0,
        "active_model": active,
    }
