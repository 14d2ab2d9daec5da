"""Nearest-neighbour and full-text queries. Vectors are only ever compared within one model version."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

FTS_DOCUMENT = "to_tsvector('english', coalesce(i.title, '') || ' ' || i.text)"


@dataclass(frozen=True)
class Hit:
    """One search result."""

    item_id: int
    kind: str
    external_id: str
    title: str | None
    text: str
    occurred_at: datetime
    score: float


def _filters(kind: str | None, since: datetime | None, exclude_item: int | None, tag_id: int | None = None) -> str:
    clauses = []
    if tag_id is not None:
        clauses.append("EXISTS (SELECT 1 FROM item_tags it WHERE it.item_id = i.id AND it.tag_id = :tag_id)")
    if kind:
        clauses.append("i.kind = :kind")
    if since:
        clauses.append("i.occurred_at >= :since")
    if exclude_item is not None:
        clauses.append("i.id <> :exclude_item")
    return "".join(f" AND {c}" for c in clauses)


def nearest(
    session: Session,
    *,
    vector: str,
    model_version_id: int,
    dims: int,
    k: int,
    ef_search: int,
    kind: str | None = None,
    since: datetime | None = None,
    exclude_item: int | None = None,
    tag_id: int | None = None,
) -> list[Hit]:
    """Top-k by cosine similarity through the version's HNSW index, exact when a filter starves the index.

    The ORDER BY repeats the index expression (`vector::vector(dims)`) and the WHERE names the version, so
    the partial index applies; iterative scanning keeps going when filters drop candidates.
    """
    filters = _filters(kind, since, exclude_item, tag_id)
    params = {"q": vector, "k": k, "kind": kind, "since": since, "exclude_item": exclude_item, "tag_id": tag_id}
    session.execute(text("SELECT set_config('hnsw.ef_search', :ef, true)"), {"ef": str(max(ef_search, k))})
    session.execute(text("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)"))
    hits = _hits(session, _scan_sql(model_version_id, dims, filters, exact=False), params)
    if filters and len(hits) < k:
        # The iterative scan stops after hnsw.max_scan_tuples visited vectors (20,000 by default), so when the
        # matches lie far from the query it returns fewer than k, even none, although k exist. Too few rows
        # is the only sign of that, so only then pay for an exact scan of the rows the filter keeps.
        hits = _hits(session, _scan_sql(model_version_id, dims, filters, exact=True), params)
    return hits


def _distance(dims: int) -> str:
    return f"e.vector::vector({int(dims)}) <=> CAST(:q AS vector({int(dims)}))"


def _scan_sql(model_version_id: int, dims: int, filters: str, *, exact: bool) -> str:
    """The top-k query: through the version's HNSW index, or (`exact`) measuring every row the filter keeps.

    Exact puts the ORDER BY outside the materialized CTE, so no index can supply the order (an HNSW index
    cannot serve a scan without ORDER BY, and pgvector never plans one).
    """
    inner_order = "" if exact else f"ORDER BY {_distance(dims)} LIMIT :k"
    return f"""
        WITH candidates AS MATERIALIZED (
            SELECT i.id, i.kind, i.external_id, i.title, i.text, i.occurred_at, {_distance(dims)} AS distance
            FROM embeddings e JOIN items i ON i.id = e.item_id
            WHERE e.model_version_id = {int(model_version_id)}{filters}
            {inner_order}
        )
        SELECT * FROM candidates ORDER BY distance LIMIT :k
    """


def _hits(session: Session, sql: str, params: dict[str, object]) -> list[Hit]:
    rows = session.execute(text(sql), params)
    return [Hit(r.id, r.kind, r.external_id, r.title, r.text, r.occurred_at, 1.0 - float(r.distance)) for r in rows]


def full_text(
    session: Session,
    *,
    query: str,
    model_version_id: int,
    k: int,
    kind: str | None = None,
    since: datetime | None = None,
    tag_id: int | None = None,
) -> list[Hit]:
    """Top-k by PostgreSQL full-text rank (English stemming), through the GIN index of migration 0002.

    Only items with a vector under `model_version_id` count, so that hybrid search covers the same items as
    vector search: during the backfill after a promotion, items not yet embedded by the new version stay out.
    """
    sql = f"""
        SELECT i.id, i.kind, i.external_id, i.title, i.text, i.occurred_at,
               ts_rank_cd({FTS_DOCUMENT}, websearch_to_tsquery('english', :query)) AS rank
        FROM items i
        WHERE {FTS_DOCUMENT} @@ websearch_to_tsquery('english', :query)
          AND EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id AND e.model_version_id = :version)
          {_filters(kind, since, None, tag_id)}
        ORDER BY rank DESC
        LIMIT :k
    """
    params = {"query": query, "version": model_version_id, "k": k, "kind": kind, "since": since, "tag_id": tag_id}
    rows = session.execute(text(sql), params)
    return [Hit(r.id, r.kind, r.external_id, r.title, r.text, r.occurred_at, float(r.rank)) for r in rows]


def item_vector(session: Session, *, item_id: int, model_version_id: int) -> str | None:
    """An item's stored vector under a version, as pgvector text."""
    return session.execute(
        text("SELECT vector::text FROM embeddings WHERE item_id = :i AND model_version_id = :v"),
        {"i": item_id, "v": model_version_id},
    ).scalar_one_or_none()


def find_item(session: Session, ref: str) -> int | None:
    """An item id from `kind/external_id`, a bare external id (if unique), or a numeric id."""
    kind, sep, external_id = ref.partition("/")
    params: dict[str, object]
    if sep and kind in ("content", "feedback"):
        sql, params = "SELECT id FROM items WHERE kind = :k AND external_id = :x", {"k": kind, "x": external_id}
    elif ref.isdigit():
        sql, params = "SELECT id FROM items WHERE id = :i OR external_id = :x", {"i": int(ref), "x": ref}
    else:
        sql, params = "SELECT id FROM items WHERE external_id = :x", {"x": ref}
    ids = session.execute(text(sql + " LIMIT 2"), params).scalars().all()
    return ids[0] if len(ids) == 1 else None


def active_version(session: Session) -> tuple[int, str, int] | None:
    """(id, name, dims) of the active model version."""
    row = session.execute(text("SELECT id, name, dims FROM model_versions WHERE status = 'active'")).first()
    return (int(row.id), str(row.name), int(row.dims)) if row else None


def tag_id_by_name(session: Session, name: str) -> int | None:
    """A current tag's id; None for a tag the taxonomy never had or retired (its items are not kept up to date)."""
    return session.execute(text("SELECT id FROM tags WHERE name = :n AND retired_at IS NULL"), {"n": name}).scalar()
