"""Alembic environment: the URL comes from tagworker's settings (or the caller's config), never from a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from models import Base
from worker.services import resolve
from worker.settings import get_settings

config = context.config
url = config.attributes.get("database_url") or resolve(get_settings()).database_url


def include_object(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    """Leave alone what autogenerate cannot compare: run-time HNSW indexes, the full-text expression index."""
    return not (type_ == "index" and ((name or "").startswith("ix_embeddings_hnsw_v") or name == "ix_items_fts"))


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection, target_metadata=Base.metadata, compare_type=True, include_object=include_object
        )
        with context.begin_transaction():
            # Two processes migrating at once (e.g. two compose replicas) take turns.
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7160401)")
            context.run_migrations()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
