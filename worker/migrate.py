"""Run Alembic from code, with the script location inside the installed package."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, func, pool, select, text
from sqlalchemy.orm import Session

import migrations
from models import TaxonomyVersion
from worker.locks import AdvisoryLock
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY, read_taxonomy
from worker.settings import get_settings
from worker.store.tags import save_taxonomy


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
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(AdvisoryLock.VECTOR_EXTENSION)})")
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, then load the default taxonomy if none is stored; safe to run concurrently."""
    ensure_vector_extension(database_url)
    command.upgrade(alembic_config(database_url), revision)
    if revision == "head":
        seed_taxonomy(database_url, get_settings().tagging.taxonomy_file or DEFAULT_TAXONOMY)


def seed_taxonomy(database_url: str, path: Path) -> None:
    """Store the taxonomy file when the database has none yet (a fresh install tags from the first event)."""
    taxonomy = read_taxonomy(path)
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with Session(engine) as session:
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(AdvisoryLock.TAXONOMY_SEED)})
            if session.scalar(select(func.count()).select_from(TaxonomyVersion)) == 0:
                save_taxonomy(session, taxonomy)
            session.commit()
    finally:
        engine.dispose()
