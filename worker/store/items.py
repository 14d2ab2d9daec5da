"""Items, their embeddings and tag corrections, written idempotently."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import select, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Embedding, Item, TagCorrection


@dataclass(frozen=True)
class ItemRow:
    """An item as the pipeline hands it to the store."""

    values: dict[str, Any]
    vector: np.ndarray
    chunks_total: int
    chunks_used: int


def known_event_hashes(session: Session, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """Event ids already stored, with their item's content hash (None for a stored tag correction)."""
    if not event_ids:
        return {}
    found: dict[uuid.UUID, str | None] = dict(
        session.execute(select(Item.event_id, Item.content_sha256).where(Item.event_id.in_(event_ids))).all()
    )
    corrections = session.scalars(select(TagCorrection.event_id).where(TagCorrection.event_id.in_(event_ids)))
    found.update({event_id: None for event_id in corrections})
    return found


def upsert_items(session: Session, rows: Sequence[ItemRow], model_version_id: int) -> int:
    """Insert items and their vectors; an event newer than the stored item for its producer id replaces it.

    Returns:
        How many items were inserted or replaced (an older event for a known id changes nothing).
    """
    if not rows:
        return 0
    statement = insert(Item).values([row.values for row in rows])
    replaced = {c: statement.excluded[c] for c in rows[0].values if c not in ("kind", "external_id")}
    statement = statement.on_conflict_do_update(
        constraint="uq_items_kind_external_id",
        set_={**replaced, "updated_at": statement.excluded.received_at},
        where=Item.occurred_at < statement.excluded.occurred_at,
    ).returning(Item.id, Item.event_id)
    written = dict((event_id, item_id) for item_id, event_id in session.execute(statement))
    vectors = [
        {
            "item_id": written[row.values["event_id"]],
            "model_version_id": model_version_id,
            "vector": row.vector,
            "chunks_total": row.chunks_total,
            "chunks_used": row.chunks_used,
        }
        for row in rows
        if row.values["event_id"] in written
    ]
    if vectors:
        embed_statement = insert(Embedding).values(vectors)
        session.execute(
            embed_statement.on_conflict_do_update(
                index_elements=[Embedding.item_id, Embedding.model_version_id],
                set_={
                    "vector": embed_statement.excluded.vector,
                    "chunks_total": embed_statement.excluded.chunks_total,
                    "chunks_used": embed_statement.excluded.chunks_used,
                    "created_at": embed_statement.excluded.created_at,
                },
            )
        )
    return len(written)


def item_ids_by_ref(session: Session, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Item ids for (kind, external id) pairs that exist."""
    if not refs:
        return {}
    rows = session.execute(
        select(Item.kind, Item.external_id, Item.id).where(tuple_(Item.kind, Item.external_id).in_(list(refs)))
    )
    return {(kind, external_id): item_id for kind, external_id, item_id in rows}


def insert_corrections(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Store tag corrections; a redelivered one (same event id) is ignored."""
    if rows:
        session.execute(insert(TagCorrection).values(list(rows)).on_conflict_do_nothing(index_elements=["event_id"]))
