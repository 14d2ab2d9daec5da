"""full-text index on items for hybrid search

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Must match worker.store.search.FTS_DOCUMENT exactly, or the planner will not use the index.
DOCUMENT = "to_tsvector('english', coalesce(title, '') || ' ' || text)"


def upgrade() -> None:
    op.execute(f"CREATE INDEX ix_items_fts ON items USING gin (({DOCUMENT}))")


def downgrade() -> None:
    op.execute("DROP INDEX ix_items_fts")
