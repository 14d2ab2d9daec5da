"""Apply tag corrections (from events or the CLI) in the caller's transaction.

Events come from several producers, out of order: a correction can arrive before its item. It is rejected then,
but waits (its `rejected_events` row names the item), and the batch that stores the item applies it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy.orm import Session

from schemas import TagCorrected
from worker.errors import CorrectionError
from worker.pipeline.validate import Accepted, Rejection, raw_text
from worker.store.item_tags import apply_correction, tag_infos
from worker.store.items import item_ids_by_ref
from worker.store.rejected import (
    arrived_items_with_waiting_corrections,
    forget_rejections,
    hold_item_arrivals,
    stop_waiting,
    waiting_corrections,
)
from worker.store.tag_renames import current_names_of_renamed

log = logging.getLogger(__name__)
ItemRef = tuple[str, str]  # (kind, external id)


def _when(event: TagCorrected) -> tuple[datetime, uuid.UUID]:
    """The order corrections apply in, whatever order they arrived in."""
    return event.corrected_at, event.event_id


def lock_for_arrivals(session: Session, accepted: list[Accepted], arriving: Collection[ItemRef]) -> None:
    """Take the item-arrivals lock before the batch writes: exclusive when one of its corrections names an item
    neither stored nor in `arriving` (it will wait for it), shared when the batch stores items.

    Call it first in the transaction (see `hold_item_arrivals`).
    """
    named = {(a.event.item.kind, a.event.item.external_id) for a in accepted if isinstance(a.event, TagCorrected)}
    elsewhere = named - set(arriving)
    waits = bool(elsewhere) and len(item_ids_by_ref(session, sorted(elsewhere))) < len(elsewhere)
    if waits or arriving:
        hold_item_arrivals(session, exclusive=waits)


def apply_corrections(session: Session, accepted: list[Accepted]) -> tuple[int, list[Rejection]]:
    """Apply each correction in order of `corrected_at` (then event id); ones naming unknown items or tags become
    rejections, and those naming an item not stored yet wait for it.

    Returns:
        How many were applied, and the rejections.
    """
    events = sorted(((a, a.event) for a in accepted if isinstance(a.event, TagCorrected)), key=lambda p: _when(p[1]))
    ids = item_ids_by_ref(session, [(e.item.kind, e.item.external_id) for _, e in events])
    infos = tag_infos(session) if events else {}
    renamed = current_names_of_renamed(session) if events else {}
    applied, rejected = 0, []
    for a, event in events:
        ref = (event.item.kind, event.item.external_id)
        item_id = ids.get(ref)
        if item_id is None:
            reason = f"tag correction names unknown item {ref[0]}/{ref[1]}; it is applied when that item is stored"
            rejected.append(_rejection(a, event, reason, waits_for=ref))
            continue
        try:
            result = apply_correction(
                session, event_id=event.event_id, item_id=item_id, added=list(event.added),
                removed=list(event.removed), actor=event.actor, corrected_at=event.corrected_at, infos=infos,
                renamed=renamed,
            )  # fmt: skip
            applied += result is not None
        except CorrectionError as exc:
            rejected.append(_rejection(a, event, str(exc)))
    return applied, rejected


def apply_waiting_corrections(session: Session, arrived: Sequence[ItemRef]) -> int:
    """Apply the corrections that waited for these items (just stored), in `corrected_at` order, and delete
    their rejections. One that fails now for another reason (a tag dropped meanwhile) stays rejected for it.

    Returns:
        How many were applied (not counting redeliveries of corrections applied before).
    """
    waiting = waiting_corrections(session, arrived)
    if not waiting:
        return 0
    events = []
    for row in waiting:
        try:
            events.append((row, TagCorrected.model_validate_json(row.raw)))
        except ValidationError as exc:  # only if the event schema changed since it arrived
            stop_waiting(session, row.id, f"tag correction no longer valid when its item arrived: {exc}")
    ids = item_ids_by_ref(session, [(e.item.kind, e.item.external_id) for _, e in events])
    infos, renamed = tag_infos(session), current_names_of_renamed(session)
    applied, done, stopped = 0, [], len(waiting) - len(events)
    for row, event in sorted(events, key=lambda p: _when(p[1])):
        item_id = ids.get((event.item.kind, event.item.external_id))
        if item_id is None:  # not among `arrived` after all: it waits on
            continue
        try:
            result = apply_correction(
                session, event_id=event.event_id, item_id=item_id,
                added=list(event.added), removed=list(event.removed), actor=event.actor,
                corrected_at=event.corrected_at, infos=infos, renamed=renamed,
            )  # fmt: skip
        except CorrectionError as exc:
            stop_waiting(session, row.id, str(exc))
            stopped += 1
            continue
        applied += result is not None
        done.append(row.id)
    forget_rejections(session, done)
    log.info("corrections that arrived before their items: %d applied now, %d rejected for another reason",
             len(done), stopped)  # fmt: skip
    return applied


def _rejection(accepted: Accepted, event: TagCorrected, reason: str, *, waits_for: ItemRef | None = None) -> Rejection:
    return Rejection(
        accepted.message_id,
        reason,
        raw_text(event.model_dump(mode="json")),
        event_id=event.event_id,
        kind=event.kind,
        waits_for=waits_for,
    )


def apply_arrived_corrections(session: Session) -> int:
    """Apply waiting corrections whose item is stored already; returns how many applied.

    The batch that stores an item applies them, but one written by an older worker (during a rolling upgrade)
    does not: the periodic refit sweeps them up, so none waits forever.
    """
    hold_item_arrivals(session, exclusive=False)
    arrived = arrived_items_with_waiting_corrections(session)
    return apply_waiting_corrections(session, arrived) if arrived else 0
