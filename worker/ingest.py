"""One ingest batch, end to end: validate, skip what is stored, embed, write in one transaction, with retries.

It never raises for bad input or a failing model: those become `rejected_events` rows. When the database stays
unreachable past the retries, the summary asks the task to requeue the messages so that nothing is lost; other
write errors record the events as failed (and requeue if even that cannot be written). A batch embedded by a
model version that was retired meanwhile is requeued too, for the active version to embed.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from worker.clustering import ThemeAssigner
from worker.corrections import apply_corrections, apply_waiting_corrections, lock_for_arrivals
from worker.db import session_scope
from worker.errors import ModelVersionRetired
from worker.pipeline.batch import EmbedOutcome, Sorted, embed_newest_that_embeds, item_values, sort_batch
from worker.pipeline.embed import Embedder
from worker.pipeline.validate import Accepted, RawMessage, Rejection, parse_message, raw_text
from worker.settings import BatchingSettings, IngestSettings
from worker.store.clusters import set_live_members
from worker.store.items import ItemRow, known_event_hashes, remember_superseded, upsert_items
from worker.store.model_versions import check_not_retired
from worker.store.rejected import record_rejections
from worker.tagging import Prediction, TaggingService, write_tagged

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class BatchSummary:
    """What a batch did; small enough to log and return from the task."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    superseded: int = 0  # events for an item that a newer event (in the batch or stored) replaced
    corrections: int = 0
    rejected: int = 0
    failed: int = 0
    requeue: bool = False
    seconds: float = 0.0
    embed_seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def is_transient(exc: BaseException) -> bool:
    """Database errors worth retrying: lost connections, a server restarting.

    A unique violation is not one: the same write would fail again, so `_process` sorts the batch again instead.
    """
    if isinstance(exc, OperationalError | InterfaceError):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


class IngestService:
    """Runs batches against one database with one embedder and model version."""

    def __init__(
        self,
        *,
        engine: Engine,
        embedder: Embedder,
        model_version_id: int,
        limits: IngestSettings,
        batching: BatchingSettings,
        tagging: TaggingService | None = None,
        themes: ThemeAssigner | None = None,
    ) -> None:
        self.engine = engine
        self.embedder = embedder
        self.model_version_id = model_version_id
        self.limits = limits
        self.batching = batching
        self.tagging = tagging
        self.themes = themes
        self._version_retired = False

    @property
    def version_retired(self) -> bool:
        """Whether a batch was refused because a switch retired this service's model version, since the last
        `clear_version_retired`: the runtime then looks up the active version before the next batch."""
        return self._version_retired

    def clear_version_retired(self) -> None:
        """Forget a refusal once the active version was looked up (a rollback may have made ours active again)."""
        self._version_retired = False

    def run(self, messages: list[RawMessage]) -> BatchSummary:
        """Process one batch; see the module docstring for the guarantees."""
        started = time.perf_counter()
        summary = BatchSummary(received=len(messages))
        parsed = [parse_message(m, self.limits) for m in messages]
        try:
            self._process(parsed, summary)
        except ModelVersionRetired as exc:
            log.info("%s; requeueing %d messages for the active version", exc, len(messages))
            self._version_retired = summary.requeue = True
        except Exception as exc:
            if is_transient(exc):
                # The database is away: recording the events as failed would lose them for good if it came back
                # in between (it did, in CI: "the database system is starting up"). Hand them back instead.
                log.error("database unreachable after retries; requeueing %d messages: %s", len(messages),
                          str(exc).splitlines()[0][:200])  # fmt: skip
                summary.requeue = True
            else:
                log.exception("batch of %d failed after retries", len(messages))
                self._record_failed(messages, parsed, exc, summary)
        summary.seconds = round(time.perf_counter() - started, 4)
        log.info("batch %s", summary.as_dict())
        return summary

    def _process(self, parsed: list[Accepted | Rejection], summary: BatchSummary) -> None:
        try:
            self._process_once(parsed, summary)
        except IntegrityError:
            # A batch running at the same time stored one of these event ids first (for other content, or the
            # same). Sorting again against what is stored now rejects or skips that event alone; retrying the
            # same write could only fail the whole batch.
            log.warning("a concurrent batch stored some of these event ids first; sorting the batch again")
            self._process_once(parsed, summary)

    def _process_once(self, parsed: list[Accepted | Rejection], summary: BatchSummary) -> None:
        event_ids = [p.event.event_id for p in parsed if isinstance(p, Accepted)]
        stored = self._with_retries(lambda s: known_event_hashes(s, event_ids))
        batch = sort_batch(parsed, stored)
        embed_started = time.perf_counter()
        outcome, superseded = embed_newest_that_embeds(self.embedder, batch)
        summary.embed_seconds = round(time.perf_counter() - embed_started, 4)
        rejections = batch.rejections + outcome.failures
        prediction = self._predict(outcome)
        themes = self._themes(outcome)
        written = self._with_retries(
            lambda s: self._write(s, batch, outcome, superseded, prediction, themes, rejections), commit=True
        )
        summary.stored, stale, summary.corrections = written
        summary.duplicates = batch.duplicates
        summary.superseded = len(superseded) + stale
        summary.rejected = sum(r.status == "invalid" for r in rejections)
        summary.failed = sum(r.status == "failed" for r in rejections)

    def _predict(self, outcome: EmbedOutcome) -> Prediction | None:
        """Tags for the embedded items; a tagger failure leaves them untagged (the next re-tag catches up)."""
        if self.tagging is None or outcome.embeddings is None:
            return None
        try:
            kinds = [a.event.item_kind for a in outcome.events]  # type: ignore[union-attr]
            return self.tagging.predict(kinds, outcome.embeddings.vectors)
        except Exception:
            log.exception("tagging failed; items of this batch stay untagged until the next re-tag")
            return None

    def _themes(self, outcome: EmbedOutcome) -> tuple[list[int], list[int | None], list[float]] | None:
        """Themes of the batch's feedback (rows, theme ids, similarities); None before the first clustering run."""
        if self.themes is None or outcome.embeddings is None:
            return None
        rows = [i for i, a in enumerate(outcome.events) if a.event.item_kind == "feedback"]  # type: ignore[union-attr]
        try:
            found = self.themes.assign(outcome.embeddings.vectors[rows])
        except Exception:
            log.exception("theme assignment failed; this batch's feedback waits for the next clustering run")
            return None
        return None if found is None else (rows, *found)

    def _write(
        self,
        session: Session,
        batch: Sorted,
        outcome: EmbedOutcome,
        superseded: list[Accepted],
        prediction: Prediction | None,
        themes: tuple[list[int], list[int | None], list[float]] | None,
        rejections: list[Rejection],
    ) -> tuple[int, int, int]:
        """Write the batch; returns items stored, events older than their stored item, corrections applied.

        Corrections that arrived before their items are applied here once the items are stored.
        """
        rows = []
        if outcome.embeddings is not None:
            for i, accepted in enumerate(outcome.events):
                rows.append(
                    ItemRow(
                        values=item_values(accepted.event),  # type: ignore[arg-type]
                        vector=outcome.embeddings.vectors[i],
                        chunks_total=outcome.embeddings.chunks_total[i],
                        chunks_used=outcome.embeddings.chunks_used[i],
                    )
                )
        arriving = sorted({(r.values["kind"], r.values["external_id"]) for r in rows})
        lock_for_arrivals(session, batch.corrections, arriving)
        written = upsert_items(session, rows, self.model_version_id)
        losers = [r.values for r in rows if r.values["event_id"] not in written]
        remember_superseded(session, losers + [item_values(a.event) for a in superseded])  # type: ignore[arg-type]
        if prediction is not None:
            item_ids = [written.get(a.event.event_id) for a in outcome.events]
            write_tagged(session, prediction.for_items(item_ids), self.model_version_id)
        if themes is not None:
            theme_rows, theme_ids, similarity = themes
            kept = [(written[outcome.events[r].event.event_id], t, sim)
                    for r, t, sim in zip(theme_rows, theme_ids, similarity, strict=True)
                    if outcome.events[r].event.event_id in written]  # fmt: skip
            dropped = set_live_members(session, item_ids=[k[0] for k in kept], cluster_ids=[k[1] for k in kept],
                                       similarity=[k[2] for k in kept])  # fmt: skip
            if dropped and self.themes is not None:
                log.info("%d items of this batch matched themes a clustering run retired meanwhile: noise", dropped)
                self.themes.reload()
        late = apply_waiting_corrections(session, arriving)
        applied, unapplied = apply_corrections(session, batch.corrections)
        record_rejections(session, rejections + unapplied)
        if rows:  # vectors, tags and themes of this version were written
            check_not_retired(session, self.model_version_id)
        return len(written), len(rows) - len(written), late + applied

    def _with_retries(self, work: Callable[[Session], T], *, commit: bool = False) -> T:
        """Run `work` in a fresh session, retrying transient errors with backoff."""
        attempts = self.batching.db_retries + 1
        for attempt in range(1, attempts + 1):
            try:
                with session_scope(self.engine) as session:
                    result = work(session)
                    if commit:
                        session.commit()
                    return result
            except Exception as exc:
                if not is_transient(exc) or attempt == attempts:
                    raise
                delay = self.batching.db_retry_base_s * 2 ** (attempt - 1) * random.uniform(0.8, 1.2)
                log.warning(
                    "database error (attempt %d/%d), retrying in %.1fs: %s",
                    attempt,
                    attempts,
                    delay,
                    str(exc).splitlines()[0][:200],
                )
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _record_failed(
        self, messages: list[RawMessage], parsed: list[Accepted | Rejection], exc: Exception, summary: BatchSummary
    ) -> None:
        retried = f" after {self.batching.db_retries} retries" if is_transient(exc) else ""
        reason = f"not stored{retried}: {type(exc).__name__}: {exc}"[:2000]
        failed = [
            p
            if isinstance(p, Rejection)
            else Rejection(
                p.message_id,
                reason,
                raw_text(p.event.model_dump(mode="json")),
                status="failed",
                event_id=p.event.event_id,
                kind=p.event.kind,
            )
            for p in parsed
        ]
        try:
            with session_scope(self.engine) as session:
                record_rejections(session, failed)
                session.commit()
            summary.failed = sum(f.status == "failed" for f in failed)
            summary.rejected = len(failed) - summary.failed
        except Exception:
            log.error("cannot record %d failed events either; requeueing them", len(messages))
            summary.requeue = True
