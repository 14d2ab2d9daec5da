"""Run Alembic from code, with the script location inside the installed package."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import psycopg2
import psycopg2.errors
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, func, pool, select, text
from sqlalchemy.orm import Session

import migrations
from models import TaxonomyVersion
from worker.errors import ConfigurationError
from worker.locks import AdvisoryLock
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY, read_taxonomy
from worker.server_versions import pgvector_problem
from worker.settings import get_settings
from worker.store.server import vector_extension_versions
from worker.store.tags import save_taxonomy

log = logging.getLogger(__name__)

# Connection failures that waiting will not cure: retrying them only delays the message by the whole wait.
_PERMANENT_CONNECT_FAILURES = ("does not exist", "authentication failed", "no pg_hba.conf entry")
# SQLSTATE classes 08 (connection exception) and 57P01-57P03 (shutting down, not accepting connections yet).
_NOT_UP_YET = (
    psycopg2.errors.ConnectionException,
    psycopg2.errors.ConnectionDoesNotExist,
    psycopg2.errors.ConnectionFailure,
    psycopg2.errors.SqlclientUnableToEstablishSqlconnection,
    psycopg2.errors.AdminShutdown,
    psycopg2.errors.CrashShutdown,
    psycopg2.errors.CannotConnectNow,
)


def alembic_config(database_url: str) -> Config:
    """An Alembic config that needs no alembic.ini and no current directory."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    config.attributes["database_url"] = database_url
    return config


def ensure_vector_extension(database_url: str) -> None:
    """Create pgvector before the first migration, whose column types need it; refuse one older than 0.8."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({int(AdvisoryLock.VECTOR_EXTENSION)})")
            available, installed = vector_extension_versions(connection)
            if problem := pgvector_problem(available=available, installed=installed):
                raise ConfigurationError(problem)
            connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
    finally:
        engine.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema to `revision`, then load the default taxonomy if none is stored; safe to run concurrently."""
    ensure_vector_extension(database_url)
    command.upgrade(alembic_config(database_url), revision)
    if revision == "head":
        seed_taxonomy(database_url, get_settings().tagging.taxonomy_file or DEFAULT_TAXONOMY)


def upgrade_when_up(database_url: str, *, wait_s: float, poll_s: float = 2.0) -> None:
    """`upgrade`, retried for up to `wait_s` while the database is not up yet (compose starts it alongside).

    Any other error (a bad taxonomy file, a refused statement, a wrong password) is raised at once.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            upgrade(database_url)
            return
        except (sqlalchemy.exc.DBAPIError, psycopg2.Error) as exc:
            if not database_not_up(exc) or time.monotonic() + poll_s > deadline:
                raise
            log.info("the database is not up yet (%s); retrying in %.0fs", str(exc).strip().splitlines()[0], poll_s)
        time.sleep(poll_s)


def database_not_up(exc: sqlalchemy.exc.DBAPIError | psycopg2.Error) -> bool:
    """Whether `exc` says the server cannot be reached or is starting or stopping, which waiting may cure."""
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    if type(orig) is psycopg2.OperationalError:  # no SQLSTATE: psycopg2 could not connect or lost the connection
        return not any(marker in str(orig) for marker in _PERMANENT_CONNECT_FAILURES)
    return isinstance(orig, _NOT_UP_YET)


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
