"""Counts for `tagworker status`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Embedding, Item, ModelVersion, RejectedEvent, TagCorrection

FAILED_IDS_SHOWN = 20  # the ids `tagworker status` lists of the items a backfill failed on; the count is whole


def backfill_summary(progress: Mapping[str, Any]) -> dict[str, Any]:
    """A version's backfill progress as the CLI shows it: `failed` is a count, `failed_ids` the first few ids.

    Args:
        progress: the `model_versions.backfill` row value ({} before any backfill): total, done, failed (the ids
            of the items the model raised on; they stay without a vector under that version), started_at,
            finished_at.
    """
    if not progress:
        return {}
    failed = list(progress.get("failed", []))
    return {**progress, "failed": len(failed), "failed_ids": failed[:FAILED_IDS_SHOWN]}


def pipeline_counts(session: Session) -> dict[str, Any]:
    """Items by kind, vectors per model version, rejections, corrections, active model, backfill, training."""
    items = dict(session.execute(select(Item.kind, func.count()).group_by(Item.kind)).all())
    vectors = dict(
        session.execute(
            select(ModelVersion.name, func.count(Embedding.item_id))
            .join(Embedding, Embedding.model_version_id == ModelVersion.id, isouter=True)
            .group_by(ModelVersion.name)
        ).all()
    )
    rejected = dict(session.execute(select(RejectedEvent.status, func.count()).group_by(RejectedEvent.status)).all())
    waiting = session.scalar(select(func.count()).where(RejectedEvent.item_kind.is_not(None)))
    active_row = session.execute(
        select(ModelVersion.name, ModelVersion.backfill).where(ModelVersion.status == "active")
    ).first()
    active = active_row.name if active_row else None
    training = session.scalar(select(ModelVersion.name).where(ModelVersion.status == "training"))
    return {
        "items": {"content": items.get("content", 0), "feedback": items.get("feedback", 0)},
        "embedded": vectors.get(active, 0) if active else 0,
        "embeddings_by_model": vectors,
        # `waiting_for_item`: of the invalid, corrections that apply once the item they name is stored.
        "rejected": {
            "invalid": rejected.get("invalid", 0),
            "failed": rejected.get("failed", 0),
            "waiting_for_item": waiting or 0,
        },
        "tag_corrections": session.scalar(select(func.count()).select_from(TagCorrection)) or 0,
        "active_model": active,
        # Re-embedding under the active version after a promotion: {"total", "done", "failed" (a count),
        # "failed_ids" (the first FAILED_IDS_SHOWN), "started_at", "finished_at"}; {} before any.
        "backfill": backfill_summary(active_row.backfill or {}) if active_row else {},
        "training": training,
    }
