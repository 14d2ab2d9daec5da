"""Real services for integration tests: embedded PostgreSQL and Redis, migrated once; real worker processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, text

from tests.integration.helpers import count_items, feedback, producer_app, publish, wait_for
from worker import embedded
from worker.db import get_engine
from worker.migrate import upgrade
from worker.processes import start_worker, stop
from worker.runtime import load_serving_model
from worker.services import ServiceUrls
from worker.settings import Settings

# Short timings so redelivery after a kill happens within a test, not within the production hour.
WORKER_ENV = {
    "TAGWORKER_BATCHING__FLUSH_EVERY": "16",
    "TAGWORKER_BATCHING__FLUSH_INTERVAL_S": "0.2",
    "TAGWORKER_BATCHING__DB_RETRIES": "3",
    "TAGWORKER_BATCHING__DB_RETRY_BASE_S": "0.2",
    "TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S": "12",
    "TAGWORKER_TAGGING__CHECK_INTERVAL_S": "0.5",
}


@pytest.fixture(scope="session")
def data_dir() -> Iterator[Path]:
    # Not under pytest's tmp dir: pytest resets it to mode 0700, which locks out PostgreSQL's own system user.
    path = Path(tempfile.mkdtemp(prefix="tagworker-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def stack(data_dir: Path) -> Iterator[ServiceUrls]:
    """Embedded PostgreSQL + Redis for the whole session, schema at head."""
    servers = embedded.ensure_running(data_dir)
    urls = ServiceUrls(database_url=servers.database_url, broker_url=servers.broker_url)
    upgrade(urls.database_url)
    register_configured_model(urls.database_url)
    saved = {k: os.environ.get(k) for k in ("TAGWORKER_DATABASE__URL", "TAGWORKER_BROKER__URL", "TAGWORKER_DATA_DIR")}
    os.environ.update(
        TAGWORKER_DATABASE__URL=urls.database_url,
        TAGWORKER_BROKER__URL=urls.broker_url,
        TAGWORKER_DATA_DIR=str(data_dir),
    )
    yield urls
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    embedded.stop(data_dir)


def register_configured_model(database_url: str) -> None:
    """What the first worker start does: the configured model becomes the first, active version. The fake
    versions other tests register then stay candidates, whatever the order (a worker refuses to serve a model
    that is not the active version)."""
    settings = Settings()
    model = settings.model.model_copy(update={"backend": "torch", "device": "cpu"})  # no ONNX export here
    load_serving_model(get_engine(database_url), settings.model_copy(update={"model": model}))


@pytest.fixture(scope="session")
def engine(stack: ServiceUrls) -> Engine:
    return get_engine(stack.database_url)


@pytest.fixture(scope="session")
def producer(stack: ServiceUrls):  # type: ignore[no-untyped-def]
    return producer_app(stack.broker_url)


def launch_worker(
    stack: ServiceUrls, data_dir: Path, name: str, queue: str = "ingest", **env: str
) -> subprocess.Popen[bytes]:
    log = data_dir / f"{name}.log"
    extra = {**WORKER_ENV, "TAGWORKER_BROKER__INGEST_QUEUE": queue, **env}
    return start_worker(stack, logfile=log, extra_env=extra, name=f"{name}@%h", queues=queue)


def wait_ready(engine: Engine, producer, worker: subprocess.Popen[bytes], queue: str = "ingest") -> None:  # type: ignore[no-untyped-def]
    """Until the worker has loaded its model and stored a first event."""
    warmup = feedback("warm-up: is the worker ready?")
    publish(producer, [warmup], queue=queue)

    def ready() -> bool:
        assert worker.poll() is None, "worker exited during start-up"
        return count_items(engine, [warmup["event_id"]]) == 1

    wait_for(ready, timeout_s=180, what="the worker to store a warm-up event")


@pytest.fixture(scope="session")
def worker(stack: ServiceUrls, data_dir: Path, engine: Engine, producer) -> Iterator[subprocess.Popen[bytes]]:  # type: ignore[no-untyped-def]
    """One real Celery worker process with the real model, shared by the tests that do not kill it."""
    process = launch_worker(stack, data_dir, "shared-worker")
    wait_ready(engine, producer, process)
    yield process
    stop(process)


def _roles(conn: Connection) -> set[str]:
    return set(conn.scalars(text("SELECT rolname FROM pg_roles")))


@pytest.fixture
def new_roles_dropped(engine: Engine) -> Iterator[None]:
    """Drops every role made during the test, with its grants and what it owns, and checks that none is left.

    Roles belong to the server, not to the session's database or a transaction: the dashboard tests used to leave
    theirs, with CONNECT and default privileges on the database, to every later test.
    """
    with engine.connect() as conn:
        before = _roles(conn)
    yield
    with engine.begin() as conn:
        made = sorted(_roles(conn) - before)
        # A test that failed before disposing its engine is still logged in as the role, temp objects and all.
        conn.execute(
            text("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE usename = ANY(:made)"),
            {"made": made},
        )
        for role in made:
            name = conn.dialect.identifier_preparer.quote(role)
            conn.execute(text(f"DROP OWNED BY {name}"))
            conn.execute(text(f"DROP ROLE {name}"))
    with engine.connect() as conn:
        assert _roles(conn) == before, "a role made by the test is still there"
