"""Turn JSON Lines into events and send them to the ingest task, as any producer would."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from celery import Celery

TASK_NAME = "tagworker.ingest"
# Ids made from content are stable, so publishing the same file twice stores nothing twice.
EVENT_NAMESPACE = uuid.UUID("8a0a3a53-3f1e-4c39-9a44-5d2f8d3b6a11")
KINDS = {"content": "content.created", "feedback": "feedback.received"}


def stable_event_id(event: dict[str, Any]) -> str:
    """A UUIDv5 from everything the record says, its own time included: an edited record gets a new id.

    A time the record carries counts: text A, then B, then A again at a later time is a third event, not a
    copy of the first (which the worker would skip as a duplicate, the item staying B). `to_event` computes
    this before it fills in a missing time, so a record without one keeps its id from one publish to the next.
    """
    said = {k: v for k, v in event.items() if k != "event_id"}
    canonical = json.dumps(said, sort_keys=True, default=str).encode("utf-8", "surrogatepass")
    return str(uuid.uuid5(EVENT_NAMESPACE, hashlib.sha256(canonical).hexdigest()))


def to_event(record: Any, kind: str | None = None) -> Any:
    """Fill in `kind`, `event_id` and `occurred_at` where a record lacks them; anything else passes as it is.

    The worker, not the publisher, decides what is valid, so a bad record still reaches `rejected_events`.
    """
    if not isinstance(record, dict):
        return record
    event = dict(record)
    if "kind" not in event:
        if kind:
            event["kind"] = KINDS[kind]
        elif "content_id" in event:
            event["kind"] = KINDS["content"]
        elif "feedback_id" in event:
            event["kind"] = KINDS["feedback"]
    if "event_id" not in event and "kind" in event:
        event["event_id"] = stable_event_id(event)
    event.setdefault("occurred_at", datetime.now(UTC).isoformat())
    return event


def read_jsonl(lines: Iterable[str]) -> Iterator[Any]:
    """Each non-blank line parsed; a line that is not JSON is passed on as the raw string."""
    for line in lines:
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except (ValueError, RecursionError):
            yield line.rstrip("\n")


def send_events(app: Celery, events: Iterable[Any], *, queue: str) -> Iterator[str]:
    """Send each event as its own message; yields the message ids as they go."""
    with app.producer_or_acquire() as producer:
        for event in events:
            result = app.send_task(TASK_NAME, args=[event], queue=queue, producer=producer)
            yield str(result.id)
