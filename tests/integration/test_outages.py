"""Database outages: retries with backoff, then hand-back to Redis; nothing is lost or half-written."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import launch_worker, wait_ready
from tests.integration.helpers import count_items, feedback, publish, wait_for
from worker import embedded
from worker.processes import stop
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_postgres_down_longer_than_the_retries_loses_nothing(
    stack: ServiceUrls, data_dir, engine: Engine, producer
) -> None:
    queue = "outage"
    worker = launch_worker(
        stack, data_dir, "outage-worker", queue=queue,
        TAGWORKER_BATCHING__DB_RETRIES="2", TAGWORKER_BATCHING__DB_RETRY_BASE_S="0.2",
    )  # fmt: skip
    try:
        wait_ready(engine, producer, worker, queue=queue)
        events = [feedback(f"Outage test message {i}: invoices and billing") for i in range(60)]
        ids = [e["event_id"] for e in events]
        embedded.stop_postgres(data_dir)
        publish(producer, events, queue=queue)
        time.sleep(6)  # several batches fail their retries and go back to Redis meanwhile
        assert worker.poll() is None, "the worker must survive a database outage"
        embedded.start_postgres(data_dir)
        engine.dispose()
        wait_for(
            lambda: count_items(engine, ids) == len(events), timeout_s=120, what="every event after the outage",
            log=data_dir / "outage-worker.log",
        )  # fmt: skip
    finally:
        stop(worker)
    with engine.connect() as conn:
        rejected = conn.execute(
            text("SELECT count(*) FROM rejected_events WHERE event_id::text = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
        vectors = conn.execute(
            text(
                "SELECT count(*) FROM embeddings e JOIN items i ON i.id = e.item_id WHERE i.event_id::text = ANY(:ids)"
            ),
            {"ids": ids},
        ).scalar_one()
    assert rejected == 0, "events that could not be written are handed back, not thrown away"
    assert vectors == len(events), "every stored item has its vector: one transaction per batch"
