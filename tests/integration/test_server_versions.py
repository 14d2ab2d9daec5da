"""The version checks of `migrate` and the worker start pass against the real (embedded) servers."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from worker.migrate import ensure_vector_extension
from worker.queues import broker_redis_version
from worker.server_versions import at_least, pgvector_problem, redis_problem
from worker.services import ServiceUrls
from worker.store.server import vector_extension_versions

pytestmark = [pytest.mark.integration]


def test_the_embedded_pgvector_is_read_and_new_enough(stack: ServiceUrls, engine: Engine) -> None:
    with engine.connect() as connection:
        available, installed = vector_extension_versions(connection)
    assert available is not None and installed is not None, "migrate installed pgvector"
    assert at_least(installed, (0, 8)) and pgvector_problem(available=available, installed=installed) is None
    ensure_vector_extension(stack.database_url)  # checks, then leaves the installed extension as it is


def test_the_embedded_redis_is_read_and_new_enough(stack: ServiceUrls) -> None:
    version = broker_redis_version(stack.broker_url)
    assert version is not None and redis_problem(version) is None


def test_a_redis_that_does_not_answer_is_left_to_celery() -> None:
    assert broker_redis_version("redis://127.0.0.1:1/0") is None
    assert broker_redis_version("memory://") is None
