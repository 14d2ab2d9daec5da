"""Messages Celery refuses before any task runs (pickle or other non-JSON content, unknown task names) are
recorded in `rejected_events` like any invalid event, instead of being dropped with only a log line.

The body of a refused message is stored as escaped text and never deserialized: a pickle is never loaded.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import signals
from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from worker.db import get_engine, session_scope
from worker.pipeline.validate import Rejection, raw_text
from worker.services import resolve
from worker.settings import get_settings
from worker.store.rejected import record_rejections

log = logging.getLogger(__name__)
MAX_RAW_BYTES = 16_384


def _message_id(message: Any) -> str:
    headers = getattr(message, "headers", None) or {}
    properties = getattr(message, "properties", None) or {}
    found = headers.get("id") or properties.get("correlation_id")
    if found:
        return str(found)
    delivery = getattr(message, "delivery_tag", None)
    return f"refused-{delivery}"


def record_refused(message: Any, reason: str) -> None:
    """Store the refusal; a failure to store is logged (Celery acks or rejects the message either way)."""
    body = getattr(message, "body", b"")
    raw = bytes(body[:MAX_RAW_BYTES]) if isinstance(body, bytes | bytearray) else str(body)[:MAX_RAW_BYTES].encode()
    # A JSON string, like every `raw`: bytes that are not UTF-8 (a pickle) become \xNN, NUL becomes \u0000.
    rejection = Rejection(_message_id(message), reason, raw_text(raw.decode("utf-8", "backslashreplace")))
    try:
        urls = resolve(get_settings(), start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            record_rejections(session, [rejection])
            session.commit()
    except Exception:
        log.exception("could not record refused message %s (%s)", rejection.message_id, reason)


class RecordingConsumer(Consumer):  # type: ignore[misc]
    """Celery's consumer, plus a `rejected_events` row for every message it cannot decode."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        content_type = getattr(message, "content_type", None)
        record_refused(message, f"refused: body is not readable as {content_type!r} ({exc}); send UTF-8 JSON")
        super().on_decode_error(message, exc)


@signals.task_unknown.connect
def _record_unknown_task(message: Any = None, name: str | None = None, **_: Any) -> None:
    record_refused(message, f"refused: unknown task {name!r}; the ingest task is 'tagworker.ingest'")


@signals.task_rejected.connect
def _record_rejected(message: Any = None, exc: Exception | None = None, **_: Any) -> None:
    if isinstance(exc, ContentDisallowed):
        content_type = getattr(message, "content_type", None)
        reason = f"refused: content type {content_type!r} is not accepted, never deserialized; send JSON"
    else:
        reason = f"refused: message Celery could not read as a task ({exc})"
    record_refused(message, reason)
