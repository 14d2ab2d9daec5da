"""Helpers for integration tests: publish like a producer, wait for rows, read them back."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.orm import Session

from worker.db import get_engine
from worker.migrate import upgrade
from worker.publish import TASK_NAME
from worker.store.item_tags import apply_correction


def producer_app(broker_url: str) -> Celery:
    """A bare Celery app, as a producer in another service would have: no tagworker code involved."""
    app = Celery(broker=broker_url)
    app.conf.task_serializer = "json"
    return app


def publish(app: Celery, payloads: Iterable[Any], queue: str = "ingest") -> list[str]:
    """Send each payload as one message; returns the message ids."""
    with app.producer_or_acquire() as producer:
        return [str(app.send_task(TASK_NAME, args=[p], queue=queue, producer=producer).id) for p in payloads]


def feedback(text_: str, **fields: Any) -> dict[str, Any]:
    event = {
        "kind": "feedback.received",
        "event_id": str(uuid.uuid4()),
        "feedback_id": f"fb-{uuid.uuid4().hex[:12]}",
        "occurred_at": datetime.now(UTC).isoformat(),
        "text": text_,
    }
    event.update(fields)
    return event


def content(text_: str, **fields: Any) -> dict[str, Any]:
    event = {
        "kind": "content.created",
        "event_id": str(uuid.uuid4()),
        "content_id": f"c-{uuid.uuid4().hex[:12]}",
        "text": text_,
    }
    event.update(fields)
    return event


def wait_for(
    condition: Callable[[], bool], *, timeout_s: float = 120, what: str = "condition", log: Path | None = None
) -> None:
    """Poll until `condition` holds; on timeout, fail with the end of the worker's `log` (CI keeps only that)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            tail = ""
            if log is not None and log.exists():
                tail = "\nlast lines of " + str(log) + ":\n" + "\n".join(log.read_text().splitlines()[-60:])
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")
        time.sleep(0.25)


def count_items(engine: Engine, event_ids: list[str]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM items WHERE event_id::text = ANY(:ids)"), {"ids": event_ids}
            ).scalar_one()
        )


def rejections(engine: Engine, message_ids: list[str]) -> dict[str, tuple[str, str]]:
    """message id -> (status, reason)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT message_id, status, reason FROM rejected_events WHERE message_id = ANY(:ids)"),
            {"ids": message_ids},
        )
        return {m: (s, r) for m, s, r in rows}


def processes_with_torch(root_pid: int) -> list[int]:
    """Processes of the tree under `root_pid` (itself included) that have torch's library mapped."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    loaded = []
    for process in tree:
        try:
            if any("libtorch" in region.path for region in process.memory_maps(grouped=True)):
                loaded.append(process.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return loaded


def scratch_database(server_url: str, *, prefix: str, migrated: bool = True) -> Iterator[str]:
    """A database of its own on the embedded server for one test (migrated unless told not to), then dropped."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    if migrated:
        upgrade(url)
    yield url
    get_engine(url).dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def correct(session: Session, item_id: int, *, added: Sequence[str] = (), removed: Sequence[str] = ()) -> list[str]:
    """A person's correction of the item now, in the caller's transaction; returns the item's tags after it."""
    result = apply_correction(
        session, event_id=uuid.uuid4(), item_id=item_id, added=list(added), removed=list(removed), actor="qa",
        corrected_at=datetime.now(UTC),
    )  # fmt: skip
    assert result is not None
    return result[1]
