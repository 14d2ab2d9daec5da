"""Broker entries no queue can take: how they are told apart from messages, and how they are reported.

An entry that no queue can take (not a kombu message: a hand-pushed string, JSON of another shape; or a message
routed to no queue) must neither crash the consumer nor stop the sweep for the entries behind it. It moves to
the dead-letter list `<unacked_key>_dead_letter` ("unacked_dead_letter" by default), one list for all queues
because the sweep cannot tell which queue such an entry came from, and gets a `rejected_events` row named
`refused-<sha1 of the entry>`. Inspect with `LRANGE unacked_dead_letter 0 -1`; nothing reads the list again.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads

from worker.errors import NotDeliverable

log = logging.getLogger(__name__)


def read_entry(raw: bytes) -> dict[str, Any]:
    """The kombu message a list entry holds; raises NotDeliverable when it holds none."""
    try:
        message = loads(bytes_to_str(raw))
    except Exception as exc:  # JSONDecodeError, RecursionError, or kombu's own decoding of tagged values
        raise NotDeliverable(f"not a kombu message (not JSON: {type(exc).__name__}: {exc})"[:500]) from None
    properties = message.get("properties") if isinstance(message, dict) else None
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        raise NotDeliverable("not a kombu message (JSON without a properties.delivery_tag string)")
    delivery = properties.get("delivery_info", {})
    if not isinstance(delivery, dict) or not all(
        isinstance(delivery.get(key, ""), str) for key in ("exchange", "routing_key")
    ):
        raise NotDeliverable("not a kombu message (delivery_info is not an object with text exchange, routing_key)")
    return message


@dataclass(frozen=True)
class DeadLetter:
    """A dead-lettered entry as `record_refused` reads a message: a body, and a tag the row is named after."""

    body: bytes

    @property
    def delivery_tag(self) -> str:
        return hashlib.sha1(self.body).hexdigest()


def report_dead_letter(raw: bytes, reason: str, dead_letter_key: str) -> None:
    """Log the entry and record it in `rejected_events`; rare enough for one line each."""
    reason = f"{reason}; moved to the Redis list {dead_letter_key!r}"
    log.warning("dead-lettered a broker entry: %s", reason)
    # Imported here: kombu loads this transport wherever a broker URL names it, and only a worker has the
    # database settings (and the database layer) that recording needs.
    from worker.refused import record_refused

    record_refused(DeadLetter(raw), f"dead-lettered by the broker: {reason}; publish with Celery's send_task")
