"""Messages Celery refuses (unknown task) are recorded, never executed; secrets stay out of output."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest
from celery import Celery
from sqlalchemy import Engine

from tests.integration.helpers import rejections, wait_for
from worker.processes import service_env
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_unknown_task_is_recorded(stack: ServiceUrls, engine: Engine, worker) -> None:  # type: ignore[no-untyped-def]
    app = Celery(broker=stack.broker_url)
    message_id = str(app.send_task("tagworker.nope", args=[{"x": 1}], queue="ingest").id)
    wait_for(lambda: message_id in rejections(engine, [message_id]), what="the unknown task to be recorded")
    assert "unknown task 'tagworker.nope'" in rejections(engine, [message_id])[message_id][1]
    assert worker.poll() is None


def test_status_never_prints_the_database_password(stack: ServiceUrls) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    # The embedded server trusts local connections, so a URL with a password still works.
    url = stack.database_url.replace("postgres@", f"postgres:{secret}@")
    env = service_env(ServiceUrls(database_url=url, broker_url=stack.broker_url))
    for args in (["status", "--json"], ["status"]):
        result = subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True,
                                text=True, timeout=120)  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
