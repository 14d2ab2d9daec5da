"""Pure steps of an ingest batch: sort messages into new events, duplicates and rejections; build rows."""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas import ContentCreated, FeedbackReceived, ItemEvent, TagCorrected
from worker.pipeline.embed import Embedder, Embeddings
from worker.pipeline.validate import Accepted, Rejection, raw_text

# Fields a producer may leave to the default "now": a redelivery must hash the same.
_HASH_EXCLUDE = {"event_id", "occurred_at", "corrected_at"}


def content_hash(event: ItemEvent | TagCorrected) -> str:
    """What an event says, hashed without its id and time, to tell a redelivery from a reused id."""
    return hashlib.sha256(event.model_dump_json(exclude=_HASH_EXCLUDE).encode()).hexdigest()


@dataclass
class Sorted:
    """A batch's messages, sorted."""

    items: list[Accepted] = field(default_factory=list)
    corrections: list[Accepted] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: int = 0
    superseded: list[Accepted] = field(default_factory=list)  # older events for an item a newer one here replaces


def _recency(event: ItemEvent) -> tuple[datetime, uuid.UUID]:
    """Which of two events for one item wins: the later `occurred_at`, then the greater event id, as the
    upsert in store/items.py decides between a stored item and an event."""
    return event.occurred_at, event.event_id


def _item_key(event: ItemEvent) -> tuple[str, str]:
    return event.item_kind, event.external_id


def _reused_id(accepted: Accepted, where: str) -> Rejection:
    event = accepted.event
    return Rejection(
        accepted.message_id,
        f"event_id {event.event_id} was already used {where} for different content; send a new event_id",
        raw_text(event.model_dump(mode="json")),
        event_id=event.event_id,
        kind=event.kind,
    )


def sort_batch(parsed: list[Accepted | Rejection], stored: dict[uuid.UUID, str | None]) -> Sorted:
    """Split parsed messages into new items, new corrections, rejections and duplicates.

    Args:
        parsed: validation results, in arrival order.
        stored: event ids already in the database, with their content hash (None for corrections).
    """
    out = Sorted()
    seen: dict[uuid.UUID, str] = {}
    newest: dict[tuple[str, str], int] = {}  # (item kind, external id) -> its event's index in out.items
    for result in parsed:
        if isinstance(result, Rejection):
            out.rejections.append(result)
            continue
        event_id, digest = result.event.event_id, content_hash(result.event)
        if event_id in seen or event_id in stored:
            previous = seen.get(event_id, stored.get(event_id))
            same = previous == digest or (previous is None and isinstance(result.event, TagCorrected))
            if same:
                out.duplicates += 1
            else:
                where = "in this batch" if event_id in seen else "by a stored event"
                out.rejections.append(_reused_id(result, where))
            continue
        seen[event_id] = digest
        if isinstance(result.event, TagCorrected):
            out.corrections.append(result)
            continue
        # One upsert cannot touch a row twice, so of several events for one item only the newest is written.
        key = _item_key(result.event)  # type: ignore[arg-type]
        if key in newest:
            kept = out.items[newest[key]]
            if _recency(result.event) > _recency(kept.event):  # type: ignore[arg-type]
                out.items[newest[key]] = result
                out.superseded.append(kept)
            else:
                out.superseded.append(result)
            continue
        newest[key] = len(out.items)
        out.items.append(result)
    return out


def item_values(event: ItemEvent) -> dict[str, Any]:
    """The `items` columns for an event."""
    values: dict[str, Any] = {
        "kind": event.item_kind,
        "external_id": event.external_id,
        "event_id": event.event_id,
        "content_sha256": content_hash(event),
        "text": event.text,
        "metadata": event.metadata,
        "occurred_at": event.occurred_at,
        "title": None,
        "url": None,
        "channel": None,
        "campaign": None,
        "language": None,
        "source": None,
        "rating": None,
        "customer_ref": None,
    }
    if isinstance(event, ContentCreated):
        values.update(
            title=event.title, url=event.url, channel=event.channel, campaign=event.campaign, language=event.language
        )
    elif isinstance(event, FeedbackReceived):
        values.update(source=event.source, rating=event.rating, customer_ref=event.customer_ref)
    return values


@dataclass(frozen=True)
class EmbedOutcome:
    """Vectors for the events that embedded, rejections for those that made the model raise."""

    events: list[Accepted]
    embeddings: Embeddings | None
    failures: list[Rejection]


def embed_each_on_failure(embedder: Embedder, texts: list[str]) -> tuple[list[int], Embeddings | None, dict[int, str]]:
    """Embed the texts; if the model raises, embed them one by one so a poison text fails alone.

    Returns:
        The indices that embedded (in order), their embeddings, and index -> error for those that did not.
    """
    if not texts:
        return [], None, {}
    try:
        return list(range(len(texts))), embedder.embed(texts), {}
    except Exception:
        pass
    kept: list[int] = []
    parts: list[Embeddings] = []
    errors: dict[int, str] = {}
    for i, one in enumerate(texts):
        try:
            parts.append(embedder.embed([one]))
            kept.append(i)
        except Exception as exc:
            errors[i] = f"{type(exc).__name__}: {exc}"
    return kept, _concat(parts), errors


def embed_isolating_failures(embedder: Embedder, accepted: list[Accepted]) -> EmbedOutcome:
    """Embed the batch; if the model raises, embed one by one so a poison text fails alone."""
    kept, embeddings, errors = embed_each_on_failure(embedder, [a.event.text for a in accepted])  # type: ignore[union-attr]
    failures = [
        Rejection(
            accepted[i].message_id,
            f"embedding failed: {error}"[:2000],
            raw_text(accepted[i].event.model_dump(mode="json")),
            status="failed",
            event_id=accepted[i].event.event_id,
            kind=accepted[i].event.kind,
        )
        for i, error in errors.items()
    ]
    return EmbedOutcome([accepted[i] for i in kept], embeddings, failures)


def embed_newest_that_embeds(embedder: Embedder, batch: Sorted) -> tuple[EmbedOutcome, list[Accepted]]:
    """Embed each item's newest event; where the model fails on it, the item's next newest event in the batch
    takes its place, as it would have if each event had come in a batch of its own.

    Returns:
        The outcome over every event tried, and the events that stay superseded.
    """
    outcome = embed_isolating_failures(embedder, batch.items)
    waiting = list(batch.superseded)
    if not outcome.failures or not waiting:
        return outcome, waiting
    by_id = {a.event.event_id: a for a in [*batch.items, *waiting]}
    events, failures = list(outcome.events), list(outcome.failures)
    parts = [outcome.embeddings] if outcome.embeddings is not None else []
    failed = outcome.failures
    while failed:
        fallbacks = []
        for key in {_item_key(by_id[f.event_id].event) for f in failed if f.event_id in by_id}:  # type: ignore[arg-type]
            older = [a for a in waiting if _item_key(a.event) == key]  # type: ignore[arg-type]
            if older:
                newest = max(older, key=lambda a: _recency(a.event))  # type: ignore[arg-type]
                waiting.remove(newest)
                fallbacks.append(newest)
        if not fallbacks:
            break
        more = embed_isolating_failures(embedder, fallbacks)
        events += more.events
        failures += more.failures
        parts += [more.embeddings] if more.embeddings is not None else []
        failed = more.failures
    return EmbedOutcome(events, _concat(parts), failures), waiting


def _concat(parts: list[Embeddings]) -> Embeddings | None:
    if not parts:
        return None
    import numpy as np

    return Embeddings(
        vectors=np.vstack([p.vectors for p in parts]),
        chunks_total=[t for p in parts for t in p.chunks_total],
        chunks_used=[u for p in parts for u in p.chunks_used],
    )
