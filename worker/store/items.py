"""Items, their embeddings and tag corrections, written idempotently."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import func, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from models import Item, ReplacedEvent, TagCorrection

if TYPE_CHECKING:
    from worker.pipeline.embed import Embeddings


@dataclass(frozen=True)
class ItemRow:
    """An item as the pipeline hands it to the store."""

    values: dict[str, Any]
    vector: np.ndarray
    chunks_total: int
    chunks_used: int


def known_event_hashes(session: Session, event_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str | None]:
    """Event ids already stored, with their content hash (None for a stored tag correction).

    An event that a newer one has replaced is still known (`replaced_events`), so its redelivery is a duplicate.
    """
    if not event_ids:
        return {}
    current = select(Item.event_id, Item.content_sha256).where(Item.event_id.in_(event_ids))
    replaced = select(ReplacedEvent.event_id, ReplacedEvent.content_sha256).where(ReplacedEvent.event_id.in_(event_ids))
    found: dict[uuid.UUID, str | None] = dict(session.execute(current.union_all(replaced)).all())
    corrections = session.scalars(select(TagCorrection.event_id).where(TagCorrection.event_id.in_(event_ids)))
    found.update({event_id: None for event_id in corrections})
    return found


_REMEMBER_SUPERSEDED = text(
    """
    INSERT INTO replaced_events (event_id, item_id, content_sha256)
    SELECT t.event_id, i.id, t.content_sha256
    FROM unnest(CAST(:event_ids AS uuid[]), CAST(:kinds AS text[]), CAST(:external_ids AS text[]),
                CAST(:hashes AS text[])) AS t(event_id, kind, external_id, content_sha256)
    JOIN items i ON i.kind = t.kind AND i.external_id = t.external_id
    WHERE i.event_id <> t.event_id
    ON CONFLICT (event_id) DO NOTHING
    """
)


def remember_superseded(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Record events that lost to a newer one for their item (`item_values` rows), as the trigger records
    replaced ones: redelivered, such an event is a duplicate, even one whose time defaulted to "now"."""
    if rows:
        session.connection().execute(_REMEMBER_SUPERSEDED, {
            "event_ids": [str(r["event_id"]) for r in rows], "kinds": [r["kind"] for r in rows],
            "external_ids": [r["external_id"] for r in rows], "hashes": [r["content_sha256"] for r in rows],
        })  # fmt: skip


def _upsert_items_statement():  # type: ignore[no-untyped-def]
    """Built once: executed with a list of rows, SQLAlchemy batches them and reuses the compiled SQL."""
    table = Item.__table__
    statement = insert(table)
    replaced = {c.name: statement.excluded[c.name] for c in table.c if c.name not in ("id", "kind", "external_id")}
    replaced["updated_at"] = func.now()
    replaced.pop("received_at")
    return statement.on_conflict_do_update(
        constraint="uq_items_kind_external_id",
        set_=replaced,
        # The later occurred_at wins; a tie goes to the greater event id, so every worker decides alike.
        where=tuple_(table.c.occurred_at, table.c.event_id)
        < tuple_(statement.excluded.occurred_at, statement.excluded.event_id),
    ).returning(table.c.id, table.c.event_id)


# One statement per batch: the vectors travel as one text[] and are cast on the server. psycopg2 speaks only
# the text protocol, and pgvector's own formatter and per-row executemany cost more than the model's forward
# pass of a short text (measured: 0.46 ms per vector to format, 1 round trip per row). Both vector writes below
# insert from these parallel arrays.
_INSERT_VECTORS = """
    INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used)
    SELECT t.item_id, :model_version_id, t.vector, t.chunks_total, t.chunks_used
    FROM unnest(CAST(:item_ids AS bigint[]), CAST(:vectors AS vector[]), CAST(:chunks_total AS smallint[]),
                CAST(:chunks_used AS smallint[])) AS t(item_id, vector, chunks_total, chunks_used)
"""

_UPSERT_EMBEDDINGS = text(
    _INSERT_VECTORS
    + """
    ON CONFLICT (item_id, model_version_id) DO UPDATE SET
        vector = excluded.vector, chunks_total = excluded.chunks_total, chunks_used = excluded.chunks_used,
        created_at = now()
    """
)


# The backfill's write: only for items still holding the text it embedded, and never over a vector a worker
# wrote meanwhile (that one is of the current text). FOR SHARE waits for an edit in progress and then checks
# the event id again (READ COMMITTED re-reads the locked row), so an item edited meanwhile is left without a
# vector, and the backfill's next chunk embeds its new text. Locks are taken in id order.
_FILL_EMBEDDINGS = text(
    """
    WITH unchanged AS (
        SELECT i.id FROM items i
        JOIN unnest(CAST(:item_ids AS bigint[]), CAST(:event_ids AS uuid[])) AS r(item_id, event_id)
            ON i.id = r.item_id AND i.event_id = r.event_id
        ORDER BY i.id
        FOR SHARE OF i
    )"""
    + _INSERT_VECTORS
    + """
    WHERE t.item_id IN (SELECT id FROM unchanged)
    ON CONFLICT (item_id, model_version_id) DO NOTHING
    """
)


_DROP_OTHER_VERSIONS = text(
    "DELETE FROM embeddings WHERE item_id = ANY(CAST(:item_ids AS bigint[])) AND model_version_id <> :model_version_id"
)


@lru_cache(maxsize=8)
def _vector_format(dims: int) -> str:
    return "[" + ",".join(["%.9g"] * dims) + "]"  # 9 significant digits round-trip a float32 exactly


def vector_literals(vectors: Sequence[np.ndarray] | np.ndarray) -> list[str]:
    """pgvector text literals, formatted with one C-level `%` per vector."""
    return [_vector_format(len(v)) % tuple(v.tolist()) for v in vectors]


_UPSERT_ITEMS = _upsert_items_statement()


def upsert_items(session: Session, rows: Sequence[ItemRow], model_version_id: int) -> dict[uuid.UUID, int]:
    """Insert items and their vectors; an event newer than the stored item for its producer id replaces it.

    Returns:
        Event id -> item id of the items inserted or replaced (an older event for a known id changes nothing).
    """
    if not rows:
        return {}
    connection = session.connection()
    written = {
        event_id: item_id for item_id, event_id in connection.execute(_UPSERT_ITEMS, [row.values for row in rows]).all()
    }
    kept = [row for row in rows if row.values["event_id"] in written]
    # A replaced item's vectors under other versions are of its old text: drop them, and the backfill of a
    # version that becomes active embeds the new text (it fills in what is missing).
    if written:
        connection.execute(
            _DROP_OTHER_VERSIONS, {"item_ids": list(written.values()), "model_version_id": model_version_id}
        )
    write_embeddings(
        session,
        model_version_id=model_version_id,
        item_ids=[written[row.values["event_id"]] for row in kept],
        vectors=[row.vector for row in kept],
        chunks_total=[row.chunks_total for row in kept],
        chunks_used=[row.chunks_used for row in kept],
    )
    return written


def fill_embeddings(
    session: Session,
    *,
    model_version_id: int,
    texts_of: Sequence[tuple[int, uuid.UUID]],
    embeddings: Embeddings,
) -> int:
    """The backfill's write of vectors for (item id, event id) pairs as read; returns how many were written.

    An item edited since it was read (another event id; an edit in progress is waited for), or given a vector
    by a worker meanwhile, is left alone: a vector of its old text would otherwise replace or outlive the new one.
    """
    if not texts_of:
        return 0
    result = session.connection().execute(
        _FILL_EMBEDDINGS,
        {
            "model_version_id": model_version_id,
            "item_ids": [item_id for item_id, _ in texts_of],
            "event_ids": [event_id for _, event_id in texts_of],
            "vectors": vector_literals(embeddings.vectors),
            "chunks_total": list(embeddings.chunks_total),
            "chunks_used": list(embeddings.chunks_used),
        },
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def item_ids_by_ref(session: Session, refs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Item ids for (kind, external id) pairs that exist."""
    if not refs:
        return {}
    rows = session.execute(
        select(Item.kind, Item.external_id, Item.id).where(tuple_(Item.kind, Item.external_id).in_(list(refs)))
    )
    return {(kind, external_id): item_id for kind, external_id, item_id in rows}


def write_embeddings(
    session: Session,
    *,
    model_version_id: int,
    item_ids: Sequence[int],
    vectors: Sequence[np.ndarray] | np.ndarray,
    chunks_total: Sequence[int],
    chunks_used: Sequence[int],
) -> None:
    """Insert or replace the vectors of items under one model version, in one statement."""
    if len(item_ids) == 0:
        return
    session.connection().execute(
        _UPSERT_EMBEDDINGS,
        {
            "model_version_id": model_version_id,
            "item_ids": list(item_ids),
            "vectors": vector_literals(vectors),
            "chunks_total": list(chunks_total),
            "chunks_used": list(chunks_used),
        },
    )
