"""Helpers shared by the CLI commands: settings, service URLs, and turning errors into clean exits."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal, NoReturn

import kombu.exceptions
import psycopg2
import psycopg2.errors
import redis
import sqlalchemy.exc
import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console
from rich.markup import escape

from worker.errors import TagworkerError
from worker.services import ServiceUrls, redact, resolve
from worker.settings import Settings, get_settings, setting_errors

console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger(__name__)

# What PostgreSQL says when a table, schema, column or function the code expects is not there: the schema was
# never migrated, or is older than this tagworker.
_SCHEMA_MISSING = (
    psycopg2.errors.UndefinedTable,
    psycopg2.errors.InvalidSchemaName,
    psycopg2.errors.UndefinedColumn,
    psycopg2.errors.UndefinedFunction,
)


@contextmanager
def clean_errors() -> Iterator[None]:
    """Print a tagworker, database or Redis error as one line and exit 2, instead of a traceback.

    Invalid settings print one line per wrong variable. The traceback is still logged at DEBUG
    (TAGWORKER_LOG_LEVEL=DEBUG) for when the one line is not enough.
    """
    try:
        yield
    except TagworkerError as exc:
        _fail(str(exc), exc=exc)
    except ValidationError as exc:
        if exc.title != Settings.__name__:
            raise  # not the user's settings: a bug, whose traceback is the useful part
        _fail(*setting_errors(exc), exc=exc)
    except SettingsError as exc:  # a group given whole (TAGWORKER_BATCHING=...) that is not JSON
        _fail(f"{_first_line(exc)}: set TAGWORKER_<GROUP>__<FIELD> variables, or the group as a JSON object", exc=exc)
    except (sqlalchemy.exc.DBAPIError, psycopg2.Error) as exc:
        _fail(database_message(exc, _service_url("database")), exc=exc)
    except (redis.RedisError, kombu.exceptions.OperationalError) as exc:  # kombu's: Celery could not send
        _fail(redis_message(exc, _service_url("broker")), exc=exc)


def _fail(*messages: str, exc: BaseException) -> NoReturn:
    log.debug("the command failed", exc_info=exc)
    for message in messages:
        console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2) from exc


def database_message(exc: sqlalchemy.exc.DBAPIError | psycopg2.Error, url: str | None) -> str:
    """One line that says what the database refused and what to do; `url` is already redacted."""
    orig = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
    detail = _first_line(orig)
    where = f" at {url}" if url else ""
    if isinstance(orig, _SCHEMA_MISSING):
        return f"the database{where} has no tagworker schema, or an older one ({detail}): run `tagworker migrate`"
    # psycopg2 raises the bare OperationalError (no SQLSTATE) when it cannot connect or loses the connection.
    if type(orig) is psycopg2.OperationalError or (
        isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated
    ):
        return (
            f"cannot connect to the database{where}: {detail}; start it (`tagworker up` for the embedded one) "
            "or fix TAGWORKER_DATABASE__URL"
        )
    if isinstance(orig, psycopg2.errors.InsufficientPrivilege):
        return (
            f"the database{where} refused the command: {detail}; grant the role in TAGWORKER_DATABASE__URL its "
            "rights on the tagworker tables, or set that URL to the role that ran `tagworker migrate`"
        )
    return (
        f"the database{where} refused the command: {detail}; check that the role in TAGWORKER_DATABASE__URL may "
        "do this, and run `tagworker migrate` if the schema is older than this tagworker"
    )


def redis_message(exc: redis.RedisError | kombu.exceptions.OperationalError, url: str | None) -> str:
    """One line for a Redis failure; `url` is already redacted."""
    where = f" at {url}" if url else ""
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError | kombu.exceptions.OperationalError):
        return (
            f"cannot reach Redis{where}: {_first_line(exc)}; start it (`tagworker up` for the embedded one) "
            "or fix TAGWORKER_BROKER__URL"
        )
    return f"Redis{where} refused the command: {_first_line(exc)}"


def _first_line(exc: BaseException | None) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip().rstrip(".") if lines else type(exc).__name__


def _service_url(service: Literal["database", "broker"]) -> str | None:
    """The redacted database or broker URL the command used, or None when it cannot be worked out."""
    try:
        urls = resolve(get_settings(), start_embedded=False)
    except (TagworkerError, ValueError):  # pydantic's ValidationError is a ValueError
        return None
    return redact(urls.database_url if service == "database" else urls.broker_url)


def settings_and_urls(*, start_embedded: bool = True) -> tuple[Settings, ServiceUrls]:
    settings = get_settings()
    return settings, resolve(settings, start_embedded=start_embedded)


def backfill_text(fill: Mapping[str, Any], *, active: bool = True) -> str:
    """`118 / 120 done, 2 failed`: a backfill summary (`worker.store.status.backfill_summary`) for a table cell.

    '' before any backfill. An unfinished one is `running` for the active version, `stopped` for another: a
    version that is no longer active gives its backfill up, and starts a fresh one if it is activated again.
    """
    if not fill:
        return ""
    state = "done" if fill.get("finished_at") else "running" if active else "stopped"
    progress = f"{fill.get('done', 0)} / {fill.get('total', 0)} {state}"
    return f"{progress}, {fill['failed']} failed" if fill.get("failed") else progress


def failed_items_hint(fill: Mapping[str, Any]) -> str | None:
    """Which items the backfill's model failed on and where to read why; None when it failed on none."""
    if not fill.get("failed"):
        return None
    ids = ", ".join(str(i) for i in fill["failed_ids"])
    shown = (
        f" (the first {len(fill['failed_ids'])} of {fill['failed']})"
        if fill["failed"] > len(fill["failed_ids"])
        else ""
    )
    return (
        f"items {ids}{shown} stay without a vector under this version: the model raised on them; "
        'the worker log has the error (search "the model failed on items")'
    )
