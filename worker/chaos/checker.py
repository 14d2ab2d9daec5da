"""The checker: what became of every message in a ledger, read from PostgreSQL.

Each message is `stored` (its event is an item or a tag correction, or a newer event for the same item
superseded it), `rejected` (a `rejected_events` row for its message id), or `lost` (neither: must be 0).
A message Celery refuses before any task runs (pickle, a body that is not UTF-8) that has no row but is named
in a worker's "refusing"/"can't decode" log line counts as `refused_unrecorded`: not lost, and not recorded
either (the issue asks for a `rejected_events` row; today's worker only logs it).

`duplicate_effects` (must be 0) counts effects that happened more than once: more than one item row per event
id or per (kind, external id), more than one embedding per item and model version, more than one correction or
rejection row per key, a message recorded as failed whose event was stored all the same, and an event id sent
with different contents whose other contents were stored silently instead of rejected. (A message recorded as
failed counts only when no other message reused its event id for other content: then it is one event twice.)

`re_executions` (allowed) is computed by the scenario from the workers' logs: see `ChaosStack.batch_receipts`.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from worker.chaos.ledger import Ledger, Sent


@dataclass
class Counts:
    """The checker's verdict on one ledger."""

    sent: int = 0
    stored: int = 0
    rejected: int = 0
    lost: int = 0
    duplicate_effects: int = 0
    re_executions: int = 0
    half_written: int = 0
    rejected_without_reason: int = 0
    refused_unrecorded: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Found:
    items: dict[str, datetime]  # event id -> occurred_at of the item it wrote
    by_ref: dict[tuple[str, str], datetime]  # (kind, external id) -> occurred_at of the stored item
    corrections: set[str]
    rejected: dict[str, tuple[str, str]]  # message id -> (status, reason)


def _query(conn: Connection, entries: list[Sent]) -> Found:
    ids = sorted({e.event_id for e in entries if e.event_id})
    refs = sorted({e.item[1] for e in entries if e.item})
    items = conn.execute(text("SELECT event_id::text, occurred_at FROM items WHERE event_id::text = ANY(:ids)"),
                         {"ids": ids})  # fmt: skip
    by_ref = conn.execute(text("SELECT kind, external_id, occurred_at FROM items WHERE external_id = ANY(:x)"),
                          {"x": refs})  # fmt: skip
    corrections = conn.execute(text("SELECT event_id::text FROM tag_corrections WHERE event_id::text = ANY(:ids)"),
                               {"ids": ids})  # fmt: skip
    rejected = conn.execute(
        text("SELECT message_id, status, reason FROM rejected_events WHERE message_id = ANY(:m)"),
        {"m": [e.message_id for e in entries]},
    )
    return Found(
        items={e: at for e, at in items.tuples()},
        by_ref={(k, x): at for k, x, at in by_ref.tuples()},
        corrections=set(corrections.scalars()),
        rejected={m: (s, r) for m, s, r in rejected.tuples()},
    )


def _repeated_rows(conn: Connection, entries: list[Sent]) -> int:
    """Rows beyond the first per key that must be unique, over this ledger's events and messages."""
    ids = sorted({e.event_id for e in entries if e.event_id})
    statements = [
        "SELECT count(*) - count(DISTINCT event_id) FROM items WHERE event_id::text = ANY(:ids)",
        "SELECT count(*) - count(DISTINCT (kind, external_id)) FROM items WHERE event_id::text = ANY(:ids)",
        "SELECT count(*) - count(DISTINCT (e.item_id, e.model_version_id)) FROM embeddings e "
        "JOIN items i ON i.id = e.item_id WHERE i.event_id::text = ANY(:ids)",
        "SELECT count(*) - count(DISTINCT event_id) FROM tag_corrections WHERE event_id::text = ANY(:ids)",
        "SELECT count(*) - count(DISTINCT message_id) FROM rejected_events WHERE message_id = ANY(:m)",
    ]
    params = {"ids": ids, "m": [e.message_id for e in entries]}
    return sum(int(conn.execute(text(sql), params).scalar_one()) for sql in statements)


def _half_written(conn: Connection, entries: list[Sent]) -> int:
    """Stored items of this ledger without a vector: a batch written in part."""
    sql = ("SELECT count(*) FROM items i WHERE i.event_id::text = ANY(:ids) "
           "AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.item_id = i.id)")  # fmt: skip
    return int(conn.execute(text(sql), {"ids": sorted({e.event_id for e in entries if e.event_id})}).scalar_one())


def _time(value: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _is_stored(entry: Sent, found: Found) -> bool:
    if entry.event_id and (entry.event_id in found.items or entry.event_id in found.corrections):
        return True
    stored_at = found.by_ref.get(entry.item) if entry.item else None
    sent_at = _time(entry.occurred_at)
    try:
        return stored_at is not None and sent_at is not None and stored_at >= sent_at  # superseded by a newer one
    except TypeError:  # a naive time sent: the worker refuses those, so it cannot be the superseded case
        return False


def classify(entries: list[Sent], found: Found, logged_refusals: Collection[str] = ()) -> Counts:
    """Sort every message into stored, rejected or lost; count the effects that happened twice.

    Args:
        logged_refusals: message ids that a worker logged as refused before any task ran.
    """
    counts = Counts(sent=len(entries))
    hashes_by_id: dict[str, set[str]] = defaultdict(set)
    for entry in entries:
        if entry.event_id:
            hashes_by_id[entry.event_id].add(entry.sha256)
    silently_kept: dict[str, set[str]] = defaultdict(set)  # event id -> hashes stored without a rejection
    for entry in entries:
        rejection = found.rejected.get(entry.message_id)
        stored = _is_stored(entry, found)
        if rejection is not None:
            counts.rejected += 1
            counts.rejected_without_reason += not rejection[1].strip()
            # Recorded as failed yet stored: twice only if every message with this id said the same thing.
            same_event = bool(entry.event_id) and len(hashes_by_id[entry.event_id or ""]) == 1
            counts.duplicate_effects += rejection[0] == "failed" and stored and same_event
        elif stored:
            counts.stored += 1
            if entry.event_id:
                silently_kept[entry.event_id].add(entry.sha256)
        elif not entry.reaches_task and entry.message_id in logged_refusals:
            counts.refused_unrecorded += 1
        else:
            counts.lost += 1
    for hashes in silently_kept.values():
        counts.duplicate_effects += len(hashes) - 1  # the same event id stored for two different contents
    return counts


def check(engine: Engine, ledger: Ledger, logged_refusals: Collection[str] = ()) -> Counts:
    """The checker's counts for the ledger now (re_executions left at 0 for the scenario to fill in)."""
    with engine.connect() as conn:
        counts = classify(ledger.entries, _query(conn, ledger.entries), logged_refusals)
        counts.duplicate_effects += _repeated_rows(conn, ledger.entries)
        counts.half_written = _half_written(conn, ledger.entries)
    return counts


def wait_settled(
    engine: Engine,
    ledger: Ledger,
    *,
    timeout_s: float,
    progress: Callable[[int, int], None] | None = None,
    logged_refusals: Callable[[], Collection[str]] = lambda: (),
) -> Counts:
    """Check until nothing is lost (every message stored or rejected) or the timeout passes; the last counts."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            counts = check(engine, ledger, logged_refusals())
        except DBAPIError:  # the database is being restarted under us
            if time.monotonic() > deadline:
                raise
            engine.dispose()
            time.sleep(1)
            continue
        if progress:
            progress(counts.sent - counts.lost, counts.sent)
        if counts.lost == 0 or time.monotonic() > deadline:
            return counts
        time.sleep(1)
