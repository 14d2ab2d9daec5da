"""Migration 0015 (theme names): the views' columns are appended, and down and up again keep bodies and grants."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, create_engine, text

from tests.integration.helpers import scratch_database
from worker.db import get_engine
from worker.migrate import alembic_config, upgrade
from worker.services import ServiceUrls
from worker.store.dashboard import grant_dashboard

pytestmark = pytest.mark.integration

VIEWS = ("clusters", "cluster_trend_daily", "feedback_clusters")
CLUSTERS_0014 = [
    "cluster_id", "label", "keywords", "items", "first_seen", "last_seen", "last_7_days", "previous_7_days", "trend",
    "representative_item_ids", "first_run_id", "last_run_id", "created_at",
]  # fmt: skip


@pytest.fixture
def engine(stack: ServiceUrls) -> Iterator[Engine]:
    """A database of its own at 0014 (`new_roles_dropped` drops the test's roles in it)."""
    for url in scratch_database(stack.database_url, prefix="mig0015", migrated=False):
        upgrade(url, "0014")
        yield get_engine(url)


def views(conn: Connection) -> dict[str, tuple[str, list[str] | None]]:
    """Each view's definition and options."""
    rows = conn.execute(
        text("SELECT c.relname, pg_get_viewdef(c.oid), c.reloptions FROM pg_class c "
             "WHERE c.relnamespace = 'dashboard'::regnamespace AND c.relname = ANY(:v)"),
        {"v": list(VIEWS)},
    )  # fmt: skip
    return {r[0]: (r[1], r[2]) for r in rows}


def columns(conn: Connection, view: str) -> list[str]:
    query = "SELECT column_name FROM information_schema.columns WHERE table_schema = 'dashboard' AND table_name = :v "
    return list(conn.scalars(text(query + "ORDER BY ordinal_position"), {"v": view}))


def readers(conn: Connection) -> dict[str, bool]:
    return {
        role: bool(conn.scalar(text("SELECT has_table_privilege(:r, 'dashboard.clusters', 'SELECT')"), {"r": role}))
        for role in ("theme_dash", "theme_plain")
    }


@pytest.mark.usefixtures("new_roles_dropped")
def test_0015_appends_columns_and_goes_down_and_up_keeping_bodies_and_grants(engine: Engine) -> None:
    url = engine.url.render_as_string(hide_password=False)
    with engine.begin() as conn:
        grant_dashboard(conn, "theme_dash", "pw")  # default privileges: new views are granted to it too
        conn.execute(text("CREATE ROLE theme_plain; GRANT USAGE ON SCHEMA dashboard TO theme_plain; "
                          "GRANT SELECT ON dashboard.clusters TO theme_plain"))  # fmt: skip
    with engine.connect() as conn:
        before = views(conn)

    upgrade(url)
    with engine.connect() as conn:
        assert columns(conn, "clusters") == [*CLUSTERS_0014, "auto_label", "named_by"]
        assert {name: options for name, (_, options) in views(conn).items()} == {
            v: ["security_barrier=true"] for v in VIEWS
        }
        assert readers(conn) == {"theme_dash": True, "theme_plain": True}
    dash = create_engine(engine.url.set(username="theme_dash", password="pw"))
    with dash.connect() as conn:
        conn.execute(text("SELECT label, auto_label, named_by FROM dashboard.clusters")).all()
    dash.dispose()

    command.downgrade(alembic_config(url), "0014")
    with engine.connect() as conn:
        assert views(conn) == before, "the downgrade restores the views of 0014 exactly"
        assert readers(conn) == {"theme_dash": True, "theme_plain": True}
        names = conn.scalars(text("SELECT column_name FROM information_schema.columns WHERE table_name = 'clusters' "
                                  "AND table_schema = 'public' AND column_name LIKE 'name%'"))  # fmt: skip
        assert list(names) == []

    upgrade(url)
    with engine.connect() as conn:
        assert columns(conn, "clusters")[-2:] == ["auto_label", "named_by"]
        assert readers(conn) == {"theme_dash": True, "theme_plain": True}
