"""Run Alembic from code, with the script location inside the installed package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, pool

import migrations


def alembic_config(database_url: str) -> Config:
    """An Alembic config that needs no alembic.ini and no current directory."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["database_url"] = database_url
    return config


def ensure_vector_extension(database_url: str) -> None:
    """Create pgvector before the first migration, whose column types need it."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7160402)")
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`; safe to run from several processes at once."""
    ensure_vector_extension(database_url)
    command.upgrade(alembic_config(database_url), revision)
