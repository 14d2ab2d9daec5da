"""Which queues a worker started by `tagworker up`, `demo` or `bench` consumes when none are named."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import WORKER_ENV
from tests.integration.helpers import producer_app, wait_for
from worker.processes import start_worker, stop
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration]


def test_a_worker_started_without_queues_consumes_the_configured_ingest_and_training_queues(
    stack: ServiceUrls, data_dir: Path
) -> None:
    """`up` and `demo` started workers on the literal queue "ingest": beat's retrain and backfill (training queue)
    never ran, and with TAGWORKER_BROKER__INGEST_QUEUE changed the demo published where no worker listened."""
    name = f"queues-{uuid.uuid4().hex[:8]}"
    log = data_dir / f"{name}.log"
    env = {**WORKER_ENV, "TAGWORKER_BROKER__INGEST_QUEUE": f"{name}-ingest"}
    worker = start_worker(stack, concurrency=1, logfile=log, extra_env=env, name=f"{name}@%h")
    control = producer_app(stack.broker_url).control
    replies: dict[str, Any] = {}

    def answered() -> bool:
        assert worker.poll() is None, log.read_text()
        replies.update(control.inspect(timeout=1).active_queues() or {})
        return any(node.startswith(f"{name}@") for node in replies)

    try:
        wait_for(answered, timeout_s=180, what="the worker to answer", log=log)
    finally:
        stop(worker)
    queues = {queue["name"] for node, found in replies.items() if node.startswith(f"{name}@") for queue in found}
    assert queues == {f"{name}-ingest", "training"}
