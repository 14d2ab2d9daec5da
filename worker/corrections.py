"""Apply tag corrections (from events or the CLI) in the caller's transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from schemas import TagCorrected
from worker.errors import CorrectionError
from worker.pipeline.validate import Accepted, Rejection, raw_text
from worker.store.item_tags import apply_correction, tag_infos
from worker.store.items import item_ids_by_ref


def apply_corrections(session: Session, accepted: list[Accepted]) -> tuple[int, list[Rejection]]:
    """Apply each correction in order of `corrected_at` (then event id); ones naming unknown items or tags become
    rejections.

    Returns:
        How many were applied, and the rejections.
    """
    events = sorted(
        ((a, a.event) for a in accepted if isinstance(a.event, TagCorrected)),
        key=lambda pair: (pair[1].corrected_at, pair[1].event_id),
    )
    ids = item_ids_by_ref(session, [(e.item.kind, e.item.external_id) for _, e in events])
    infos = tag_infos(session) if events else {}
    applied, rejected = 0, []
    for a, event in events:
        item_id = ids.get((event.item.kind, event.item.external_id))
        try:
            if item_id is None:
                raise CorrectionError(f"tag correction names unknown item {event.item.kind}/{event.item.external_id}")
            result = apply_correction(
                session, event_id=event.event_id, item_id=item_id, added=list(event.added),
                removed=list(event.removed), actor=event.actor, corrected_at=event.corrected_at, infos=infos,
            )  # fmt: skip
            applied += result is not None
        except CorrectionError as exc:
            rejected.append(
                Rejection(
                    a.message_id,
                    str(exc),
                    raw_text(event.model_dump(mode="json")),
                    event_id=event.event_id,
                    kind=event.kind,
                )
            )
    return applied, rejected
