"""dashboard schema: stable views for dashboards (the SQL contract)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Columns of these views are a contract: add columns at the end, never rename or drop them.
VIEWS = {
    "feedback_clusters": """
        SELECT i.id AS item_id, i.external_id AS feedback_id, i.text, i.source, i.rating, i.customer_ref,
               i.occurred_at, m.cluster_id, c.label AS cluster_label, m.similarity, m.method AS assigned_by,
               (m.item_id IS NOT NULL AND m.cluster_id IS NULL) AS is_noise
        FROM items i
        LEFT JOIN cluster_members m ON m.item_id = i.id
        LEFT JOIN clusters c ON c.id = m.cluster_id
        WHERE i.kind = 'feedback'
    """,
    "clusters": """
        SELECT c.id AS cluster_id, c.label, c.keywords, count(m.item_id) AS items,
               min(i.occurred_at) AS first_seen, max(i.occurred_at) AS last_seen,
               count(m.item_id) FILTER (WHERE i.occurred_at >= now() - interval '7 days') AS last_7_days,
               count(m.item_id) FILTER (WHERE i.occurred_at >= now() - interval '14 days'
                                          AND i.occurred_at < now() - interval '7 days') AS previous_7_days,
               count(m.item_id) FILTER (WHERE i.occurred_at >= now() - interval '7 days')
                 - count(m.item_id) FILTER (WHERE i.occurred_at >= now() - interval '14 days'
                                              AND i.occurred_at < now() - interval '7 days') AS trend,
               c.representative_item_ids, c.first_run_id, c.last_run_id, c.created_at
        FROM clusters c
        LEFT JOIN cluster_members m ON m.cluster_id = c.id
        LEFT JOIN items i ON i.id = m.item_id
        WHERE c.retired_at IS NULL
        GROUP BY c.id
    """,
    "cluster_trend_daily": """
        SELECT date_trunc('day', i.occurred_at)::date AS day, m.cluster_id, c.label AS cluster_label,
               count(*) AS items
        FROM cluster_members m
        JOIN items i ON i.id = m.item_id
        JOIN clusters c ON c.id = m.cluster_id
        GROUP BY 1, 2, 3
    """,
    "tag_counts_daily": """
        SELECT date_trunc('day', i.occurred_at)::date AS day, i.kind, g.facet, g.name AS tag, it.source,
               count(*) AS items
        FROM item_tags it
        JOIN tags g ON g.id = it.tag_id
        JOIN items i ON i.id = it.item_id
        GROUP BY 1, 2, 3, 4, 5
    """,
    "cluster_runs": """
        SELECT id AS run_id, status, items, clusters, noise_share, seconds, message, started_at, finished_at
        FROM cluster_runs
    """,
}


def upgrade() -> None:
    op.execute("CREATE SCHEMA IF NOT EXISTS dashboard")
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW dashboard.{name} AS {body}")


def downgrade() -> None:
    op.execute("DROP SCHEMA dashboard CASCADE")
