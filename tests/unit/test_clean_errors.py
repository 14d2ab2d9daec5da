"""clean_errors(): database and Redis failures become one line that says what to do, never a traceback."""

from __future__ import annotations

from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import redis
import sqlalchemy.exc
import typer
from pydantic import ValidationError

from schemas import ContentCreated
from worker.cli.common import clean_errors, database_message, redis_message
from worker.errors import ConfigurationError
from worker.settings import Settings

URL = "postgresql+psycopg2://app:***@db/tagworker"


def _wrapped(orig: Exception) -> sqlalchemy.exc.DBAPIError:
    wrapped = sqlalchemy.exc.DBAPIError.instance("SELECT 1", {}, orig, psycopg2.Error)
    assert isinstance(wrapped, sqlalchemy.exc.DBAPIError)
    return wrapped


@pytest.mark.parametrize(
    ("orig", "message"),
    [
        (psycopg2.errors.UndefinedTable('relation "items" does not exist\nLINE 1: ...'),
         f'the database at {URL} has no tagworker schema, or an older one (relation "items" does not exist): '
         "run `tagworker migrate`"),
        (psycopg2.OperationalError('connection to server at "db", port 5432 failed: Connection refused\n'),
         f'cannot connect to the database at {URL}: connection to server at "db", port 5432 failed: '
         "Connection refused; start it"),
        (psycopg2.errors.QueryCanceled("canceling statement due to statement timeout"),
         f"the database at {URL} refused the command: canceling statement due to statement timeout; check that "
         "the role in TAGWORKER_DATABASE__URL may do this, and run `tagworker migrate` if the schema is older "
         "than this tagworker"),
        (psycopg2.errors.InsufficientPrivilege("permission denied for table items"),
         f"the database at {URL} refused the command: permission denied for table items; grant the role in "
         "TAGWORKER_DATABASE__URL its rights on the tagworker tables, or set that URL to the role that ran "
         "`tagworker migrate`"),
    ],
)  # fmt: skip
def test_database_errors_say_what_to_do(orig: Exception, message: str) -> None:
    assert database_message(_wrapped(orig), URL).startswith(message)
    assert database_message(orig, URL).startswith(message)  # raised by psycopg2 directly, not through SQLAlchemy


def test_redis_errors_say_what_to_do() -> None:
    refused = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    assert redis_message(refused, "redis://:***@r:6379/0").startswith(
        "cannot reach Redis at redis://:***@r:6379/0: Error 111 connecting to 127.0.0.1:1. Connection refused; start it"
    )
    assert redis_message(redis.ResponseError("WRONGTYPE"), None) == "Redis refused the command: WRONGTYPE"


@pytest.mark.parametrize(
    "exc",
    [
        _wrapped(psycopg2.errors.InvalidSchemaName('schema "dashboard" does not exist')),
        _wrapped(psycopg2.errors.InsufficientPrivilege("permission denied for table items\nDETAIL: ...")),
        redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
        ConfigurationError("a message with [/brackets] in it"),
    ],
)
def test_clean_errors_print_one_line_and_exit_2(exc: Exception, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit) as exit_info, clean_errors():
        raise exc
    assert exit_info.value.exit_code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines


def test_invalid_settings_print_one_line_per_variable_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A bad setting printed pydantic's 50-line traceback instead."""
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("TAGWORKER_BATCHING__FLUSH_EVERY", "0")
    monkeypatch.setenv("TAGWORKER_BATCHING__FLUSH_EVRY", "7")

    with pytest.raises(typer.Exit) as exit_info, clean_errors():
        Settings()

    assert exit_info.value.exit_code == 2
    assert sorted(capsys.readouterr().err.splitlines()) == [
        "error: TAGWORKER_BATCHING__FLUSH_EVERY='0': Input should be greater than or equal to 1",
        "error: TAGWORKER_BATCHING__FLUSH_EVRY is not a setting; did you mean TAGWORKER_BATCHING__FLUSH_EVERY?",
    ]


def test_a_validation_error_that_is_not_about_settings_keeps_its_traceback() -> None:
    """Only the user's settings become a one-line message; any other model's error is a bug to see in full."""
    with pytest.raises(ValidationError), clean_errors():
        ContentCreated.model_validate({"text": "no ids"})
