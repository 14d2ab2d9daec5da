"""`tagworker migrate` waits for a database that is not up yet, and for nothing else."""

from __future__ import annotations

import time

import psycopg2
import psycopg2.errors
import pytest
import sqlalchemy.exc

from worker.migrate import database_not_up, upgrade_when_up


def _wrapped(orig: Exception) -> sqlalchemy.exc.DBAPIError:
    wrapped = sqlalchemy.exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg2.Error)
    assert isinstance(wrapped, sqlalchemy.exc.DBAPIError)
    return wrapped


@pytest.mark.parametrize(
    ("orig", "waits"),
    [
        (psycopg2.OperationalError('connection to server at "db" (10.0.0.2), port 5432 failed: Connection refused'),
         True),
        (psycopg2.OperationalError("FATAL:  the database system is starting up"), True),
        (psycopg2.errors.CannotConnectNow("the database system is starting up"), True),
        (psycopg2.errors.AdminShutdown("terminating connection due to administrator command"), True),
        (psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"), False),
        (psycopg2.OperationalError('FATAL:  database "tagworkr" does not exist'), False),
        (psycopg2.OperationalError('FATAL:  password authentication failed for user "tagworker"'), False),
        (psycopg2.errors.InsufficientPrivilege("permission denied to create extension \"vector\""), False),
        (psycopg2.errors.UndefinedTable('relation "items" does not exist'), False),
    ],
    ids=["refused", "starting", "cannot-connect-now", "shutdown", "timeout", "no-database", "password", "privilege",
         "no-table"],
)  # fmt: skip
def test_only_a_database_that_is_not_up_yet_is_waited_for(orig: Exception, waits: bool) -> None:
    assert database_not_up(_wrapped(orig)) is waits
    assert database_not_up(orig) is waits


def test_a_database_that_never_comes_up_is_reported_after_the_wait() -> None:
    started = time.monotonic()
    with pytest.raises(sqlalchemy.exc.OperationalError, match="Connection refused"):
        upgrade_when_up("postgresql+psycopg2://tagworker@127.0.0.1:1/tagworker", wait_s=1.0, poll_s=0.2)
    assert 0.6 <= time.monotonic() - started < 10
