"""Engines and sessions; one engine per process, made after any fork."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

_engines: dict[tuple[int, str], Engine] = {}


def get_engine(url: str, *, pool_size: int = 5, connect_timeout_s: int = 5) -> Engine:
    """The process's engine for `url`; a forked child gets its own instead of sharing the parent's sockets."""
    key = (os.getpid(), url)
    if key not in _engines:
        _engines[key] = create_engine(
            url,
            pool_size=pool_size,
            pool_pre_ping=True,
            connect_args={"connect_timeout": connect_timeout_s, "application_name": "tagworker"},
        )
        event.listen(_engines[key], "connect", _register_vector)
    return _engines[key]


def _register_vector(dbapi_connection: object, _record: object) -> None:
    """Let raw SQL read `vector` columns as numpy arrays too (no-op before pgvector is installed)."""
    from pgvector.psycopg2 import register_vector

    try:
        register_vector(dbapi_connection)
    except Exception:
        dbapi_connection.rollback()  # type: ignore[attr-defined]


def dispose_all() -> None:
    """Drop every engine this process made (connections inherited through fork are not closed, only dropped)."""
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that rolls back on error; the caller commits."""
    session = sessionmaker(bind=engine, expire_on_commit=False)()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def unlock_quietly(connection: Connection, key: int, what: str) -> None:
    """Release a session-level advisory lock, logging rather than raising.

    A dropped connection has released the lock already, and an error here must not replace the run's own
    result (or its own exception).
    """
    try:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        connection.commit()
    except SQLAlchemyError:
        log.warning("could not release the %s lock; its connection was lost, which released it", what, exc_info=True)
