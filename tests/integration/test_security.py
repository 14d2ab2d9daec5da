"""Messages Celery refuses before any task runs are recorded, never executed; secrets stay out of output."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import Engine

from tests.integration.helpers import rejections, wait_for
from worker.chaos.faults import pickle_task_body
from worker.chaos.ledger import Ledger
from worker.processes import service_env
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_refused_messages_are_recorded_and_never_run(  # type: ignore[no-untyped-def]
    stack: ServiceUrls, engine: Engine, worker, tmp_path: Path
) -> None:
    app = Celery(broker=stack.broker_url)
    unknown = str(app.send_task("tagworker.nope", args=[{"x": 1}], queue="ingest").id)
    ledger = Ledger()
    marker = tmp_path / "pickle-ran"
    pickled = ledger.publish_refusable(app, queue="ingest", body=pickle_task_body(marker),
                                       content_type="application/x-python-serialize")  # fmt: skip
    not_utf8 = ledger.publish_refusable(app, queue="ingest", body=b'[["\xff\xfe x"], {}, {}]',
                                        content_type="application/json", content_encoding="utf-8")  # fmt: skip
    expected = [unknown, pickled, not_utf8]
    wait_for(lambda: len(rejections(engine, expected)) == 3, what="the three refused messages to be recorded")
    found = rejections(engine, expected)
    assert "unknown task 'tagworker.nope'" in found[unknown][1]
    assert "application/x-python-serialize" in found[pickled][1]
    assert "send UTF-8 JSON" in found[not_utf8][1]
    assert {status for status, _ in found.values()} == {"invalid"}
    assert not marker.exists(), "the pickle was loaded"
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
