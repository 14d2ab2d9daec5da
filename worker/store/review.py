"""Reads for people: an item's tags, the review queue, tag counts."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.orm import Session


@dataclass(frozen=True)
class ReviewItem:
    item_id: int
    kind: str
    external_id: str
    text: str
    margin: float | None
    tags: list[str]
    retired_tags: list[str]  # tags the item still carries that the taxonomy dropped; a person can only remove them


def review_queue(session: Session, n: int) -> list[ReviewItem]:
    """Items no person has labelled, closest to a tag threshold first (a correction there teaches the most).

    `tags` holds the item's current tags (`name:score`, best first); those the taxonomy retired are in `retired_tags`.
    """
    rows = session.execute(
        text(
            """
            SELECT i.id, i.kind, i.external_id, i.text, t.margin,
                   coalesce((SELECT array_agg(g.name || ':' || round(it.score::numeric, 2) ORDER BY it.score DESC)
                             FROM item_tags it JOIN tags g ON g.id = it.tag_id
                             WHERE it.item_id = i.id AND g.retired_at IS NULL), '{}') AS tags,
                   coalesce((SELECT array_agg(g.name ORDER BY g.name)
                             FROM item_tags it JOIN tags g ON g.id = it.tag_id
                             WHERE it.item_id = i.id AND g.retired_at IS NOT NULL), '{}') AS retired_tags
            FROM item_tagging t JOIN items i ON i.id = t.item_id
            WHERE t.margin IS NOT NULL AND NOT EXISTS (SELECT 1 FROM item_labels l WHERE l.item_id = i.id)
            ORDER BY t.margin ASC, i.id
            LIMIT :n
            """
        ),
        {"n": n},
    )
    return [ReviewItem(r.id, r.kind, r.external_id, r.text, r.margin, list(r.tags), list(r.retired_tags)) for r in rows]


def tags_of_item(session: Session, item_id: int) -> list[dict[str, object]]:
    """The item's tags, current ones first; `retired` marks a tag the taxonomy dropped (it can only be removed)."""
    rows = session.execute(
        text(
            """
            SELECT g.name AS tag, g.facet, it.score, it.source, it.head, g.retired_at IS NOT NULL AS retired
            FROM item_tags it JOIN tags g ON g.id = it.tag_id WHERE it.item_id = :i
            ORDER BY g.retired_at IS NOT NULL, g.facet, it.score DESC
            """
        ),
        {"i": item_id},
    )
    return [dict(r._mapping) for r in rows]


def tag_usage(session: Session) -> list[dict[str, object]]:
    """Every tag with how many items carry it, by source."""
    rows = session.execute(
        text(
            """
            SELECT g.facet, g.name AS tag, g.multi_label, g.retired_at IS NOT NULL AS retired,
                   count(it.item_id) FILTER (WHERE it.source = 'model') AS model_items,
                   count(it.item_id) FILTER (WHERE it.source = 'human') AS human_items
            FROM tags g LEFT JOIN item_tags it ON it.tag_id = g.id
            GROUP BY g.id ORDER BY g.retired_at IS NOT NULL, g.facet, g.name
            """
        )
    )
    return [dict(r._mapping) for r in rows]


@dataclass(frozen=True)
class FacetConflicts:
    """Items people gave two or more tags of a facet that is single-label now (a reload changed the facets)."""

    facet: str
    items: int
    examples: list[str]  # kind/external_id of a few of them, smallest id first


def single_label_conflicts(session: Session, *, examples: int = 5) -> list[FacetConflicts]:
    """Per single-label facet of the current tags, the items with two or more present human labels in it."""
    rows = session.execute(
        text(
            """
            WITH conflicted AS (
                SELECT g.facet, l.item_id
                FROM item_labels l JOIN tags g ON g.id = l.tag_id
                WHERE l.present AND g.retired_at IS NULL AND NOT g.multi_label
                GROUP BY g.facet, l.item_id HAVING count(*) > 1
            )
            SELECT c.facet, count(*) AS items,
                   (array_agg(i.kind || '/' || i.external_id ORDER BY i.id))[1:CAST(:examples AS integer)] AS examples
            FROM conflicted c JOIN items i ON i.id = c.item_id
            GROUP BY c.facet ORDER BY c.facet
            """
        ),
        {"examples": examples},
    )
    return [FacetConflicts(r.facet, int(r.items), list(r.examples)) for r in rows]
