"""The ledger: every message the chaos runner published, with its event id and a hash of what it said."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from worker.publish import TASK_NAME

_ITEM_KINDS = {"content.created": ("content", "content_id"), "feedback.received": ("feedback", "feedback_id")}
# Base time of generated events; each gets its own second so that "newer" is never a tie.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Sent:
    """One published message.

    Attributes:
        message_id: the broker message id; rejections are keyed on it.
        event_id: the event id it carried, when it had a readable one.
        item: (kind, external id) of the item it would write, when it names one.
        occurred_at: its `occurred_at` as sent, to tell a superseded event from a lost one.
        sha256: hash of the payload as sent; the same event id with another hash is a reused id.
        reaches_task: False for messages Celery refuses before any task runs (pickle, undecodable bodies).
        log_token: text by which a worker's log names a refused message (default: its id).
    """

    message_id: str
    event_id: str | None
    item: tuple[str, str] | None
    occurred_at: str | None
    sha256: str
    reaches_task: bool = True
    log_token: str | None = None


def payload_hash(payload: Any) -> str:
    """What a payload says, without its id and times: the worker's own rule for "same event" (a resend)."""
    if isinstance(payload, dict):
        payload = {k: v for k, v in payload.items() if k not in ("event_id", "occurred_at", "corrected_at")}
    canonical = json.dumps(payload, sort_keys=True, default=repr, ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def describe(message_id: str, payload: Any, *, reaches_task: bool = True) -> Sent:
    """The ledger entry for a payload, reading only what is readable (a JSON string is read as the worker does)."""
    event = payload
    if isinstance(payload, str):
        try:
            event = json.loads(payload)
        except ValueError:
            event = None
    event = event if isinstance(event, dict) else {}
    event_id = event.get("event_id")
    try:
        event_id = str(uuid.UUID(str(event_id))) if event_id is not None else None
    except ValueError:
        event_id = None
    item = None
    kind = event.get("kind")
    if isinstance(kind, str) and kind in _ITEM_KINDS:
        item_kind, id_field = _ITEM_KINDS[kind]
        if isinstance(event.get(id_field), str):
            item = (item_kind, event[id_field])
    occurred = event.get("occurred_at") if isinstance(event.get("occurred_at"), str) else None
    return Sent(message_id, event_id, item, occurred, payload_hash(event or payload), reaches_task)


def feedback_event(text: str, *, seq: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid feedback event with fresh ids."""
    return {
        "kind": "feedback.received",
        "event_id": str(uuid.uuid4()),
        "feedback_id": f"chaos-{uuid.uuid4().hex[:16]}",
        "occurred_at": (EPOCH + timedelta(seconds=seq)).isoformat(),
        "text": text,
        **fields,
    }


def stream(n: int, *, topic: str) -> list[dict[str, Any]]:
    """N valid feedback events with distinct texts, as a steady producer would send them."""
    return [feedback_event(f"{topic} message {i}: invoices, onboarding and spam folders", seq=i) for i in range(n)]


@dataclass
class Ledger:
    """Messages published for one scenario."""

    entries: list[Sent] = field(default_factory=list)

    def publish(self, app: Celery, payloads: Iterable[Any], *, queue: str, retry_s: float = 60) -> list[str]:
        """Send each payload as one ingest message and record it; a broker error is retried (a restart)."""
        ids = []
        with app.producer_or_acquire() as producer:
            for payload in payloads:
                message_id = _send_retrying(
                    lambda p=payload: app.send_task(TASK_NAME, args=[p], queue=queue, producer=producer), retry_s
                )
                self.entries.append(describe(message_id, payload))
                ids.append(message_id)
        return ids

    def publish_refusable(
        self,
        app: Celery,
        *,
        queue: str,
        body: bytes,
        content_type: str,
        content_encoding: str = "binary",
        log_token: str | None = None,
    ) -> str:
        """Send a raw ingest message whose body Celery cannot accept (never decoded as a task)."""
        message_id = str(uuid.uuid4())
        headers = {"lang": "py", "task": TASK_NAME, "id": message_id, "root_id": message_id, "parent_id": None,
                   "group": None, "retries": 0, "eta": None, "expires": None, "timelimit": [None, None],
                   "argsrepr": "", "kwargsrepr": "", "origin": "chaos"}  # fmt: skip
        target = Queue(queue, Exchange(queue, type="direct"), routing_key=queue)
        with app.producer_or_acquire() as producer:
            producer.publish(
                body, exchange=target.exchange, routing_key=queue, declare=[target], headers=headers,
                content_type=content_type, content_encoding=content_encoding, correlation_id=message_id,
            )  # fmt: skip
        digest = hashlib.sha256(body).hexdigest()
        self.entries.append(Sent(message_id, None, None, None, digest, reaches_task=False, log_token=log_token))
        return message_id

    def record(self, entry: Sent) -> None:
        self.entries.append(entry)

    @property
    def task_messages(self) -> int:
        return sum(e.reaches_task for e in self.entries)


def _send_retrying(send: Any, retry_s: float) -> str:
    deadline = time.monotonic() + retry_s
    while True:
        try:
            return str(send().id)
        except (OperationalError, ConnectionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
