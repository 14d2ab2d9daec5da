"""Re-embed stored items under the active model version, in chunks, after a promotion or a rollback.

Searches, taggers and clusters only ever compare vectors of one version, so while this runs they see the
items already re-embedded, never a mix. Progress is kept on the version's row (`tagworker status` shows it).
Items that workers still on the old version write meanwhile are caught by the next pass: the task loops
until no item lacks a vector for the active version.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from worker.db import session_scope, unlock_quietly
from worker.errors import ModelLoadError
from worker.locks import AdvisoryLock
from worker.pipeline.batch import embed_each_on_failure
from worker.pipeline.embed import Embedder
from worker.store.items import fill_embeddings
from worker.store.model_versions import active_version_id, backfill_progress, build_hnsw_index, set_backfill

log = logging.getLogger(__name__)

BACKFILL_LOCK = int(AdvisoryLock.BACKFILL)  # one backfill at a time
_LOCK_CONFLICTS = {"40P01", "55P03"}  # deadlock detected, lock not available
_MOST_FAILURES = 100  # failed texts tolerated before the failures must stay below the texts embedded

# Items without a vector under the version, less those the model failed on in this backfill (`:failed`).
_MISSING = """
    FROM items i WHERE NOT EXISTS (
        SELECT 1 FROM embeddings e WHERE e.item_id = i.id AND e.model_version_id = :version)
        AND i.id <> ALL(CAST(:failed AS bigint[]))
"""


@dataclass
class BackfillSummary:
    """`done`, `skipped` (another backfill holds the lock) or `superseded` (this version is no longer active)."""

    status: str
    embedded: int = 0
    remaining: int = 0
    failed: int = 0  # items the model raised on: they stay without a vector under this version
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BackfillProgress:
    """One run's progress, kept on the version's row (`model_versions.backfill`, which `tagworker status` shows)."""

    total: int = 0
    done: int = 0
    failed: list[int] = field(default_factory=list)  # items the model raised on: no vector under this version
    started_at: str | None = None  # None: no run has found items to re-embed since the version became active
    finished_at: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> BackfillProgress:
        """The progress a stored row holds; a key it lacks takes its default.

        Args:
            row: `model_versions.backfill`: {} before any run, and no `failed` in rows written by releases that did
                not keep the items the model failed on.
        """
        return cls(total=row.get("total", 0), done=row.get("done", 0), failed=list(row.get("failed", [])),
                   started_at=row.get("started_at"), finished_at=row.get("finished_at"))  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        """The row's value: failed; total, done and started_at once a run started; finished_at once one got to the end.

        A version found with nothing to re-embed gets only failed and finished_at: no run started.
        """
        row: dict[str, Any] = {"failed": list(self.failed)}
        if self.started_at is not None:
            row |= {"total": self.total, "done": self.done, "started_at": self.started_at}
        if self.finished_at is not None:
            row["finished_at"] = self.finished_at
        return row

    def copy(self) -> BackfillProgress:
        return replace(self, failed=list(self.failed))


def missing_count(engine: Engine, version_id: int, failed: Sequence[int] = ()) -> int:
    with engine.connect() as connection:
        query = text(f"SELECT count(*) {_MISSING}")
        return int(connection.scalar(query, {"version": version_id, "failed": list(failed)}) or 0)


class BackfillService:
    """Fills in the vectors of one model version with that version's embedder."""

    def __init__(self, *, engine: Engine, embedder: Embedder, model_version_id: int, chunk: int) -> None:
        self.engine = engine
        self.embedder = embedder
        self.model_version_id = model_version_id
        self.chunk = chunk

    def run(self, progress: Callable[[int, int], None] = lambda *_: None) -> BackfillSummary:
        """Embed every item that has no vector for this version yet; skipped if another backfill runs.

        Status `done`, `skipped`, or `superseded`: another version became active (a rollback or a promotion)
        before or while this ran, so it stopped, and the new version's own backfill can take the lock.
        """
        started = time.perf_counter()
        with self.engine.connect() as lock:
            if not lock.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": BACKFILL_LOCK}):
                return BackfillSummary("skipped")
            lock.commit()
            try:
                status, embedded, failed = self._fill(progress)
            finally:
                unlock_quietly(lock, BACKFILL_LOCK, "backfill")
        seconds = round(time.perf_counter() - started, 1)
        if embedded:
            log.info("backfill of model version %d: %d items in %.1fs", self.model_version_id, embedded, seconds)
        remaining = 0 if status == "done" else missing_count(self.engine, self.model_version_id, failed)
        return BackfillSummary(status, embedded, remaining, len(failed), seconds)

    def _fill(self, progress: Callable[[int, int], None]) -> tuple[str, int, list[int]]:
        """Chunk after chunk until no item lacks a vector, or this version stops being the active one.

        Returns the status, the vectors written, and the items the model failed on.
        """
        if self._superseded():
            return "superseded", 0, []
        # After a switch whose own build of the index failed (see `activate`); a no-op when it exists.
        build_hnsw_index(self.engine, self.model_version_id, self.embedder.dims)
        # Items the model failed on in an earlier run since this version became active are not tried again.
        with session_scope(self.engine) as session:
            earlier = BackfillProgress.from_row(backfill_progress(session, self.model_version_id))
        total = missing_count(self.engine, self.model_version_id, earlier.failed)
        if total == 0:
            # Say it finished: nothing was left to re-embed, or the run that got to the end stopped before it could.
            if earlier.finished_at is None:
                earlier.finished_at = datetime.now(UTC).isoformat()
                self._record(earlier)
            return "done", 0, earlier.failed
        state = BackfillProgress(total=total, started_at=datetime.now(UTC).isoformat(), failed=earlier.failed)
        while True:
            # Checked per chunk: a backfill takes long, and one for a retired version would hold the lock the
            # active version's backfill needs while writing vectors nothing reads.
            if self._superseded():
                return "superseded", state.done, state.failed
            filled, state = self._fill_chunk_retrying(state)
            if not filled:
                return "done", state.done, state.failed
            progress(state.done, state.total)

    def _fill_chunk_retrying(self, state: BackfillProgress, attempts: int = 5) -> tuple[int, BackfillProgress]:
        """One chunk in its own transaction, again after a deadlock with an ingest batch or a correction.

        The chunk waits for item locks (see `fill_embeddings`), and a batch locks its items in its own order, so
        the two can deadlock; PostgreSQL then cancels one of them. A retry reads and embeds the chunk again.
        Returns the items read and the progress after the chunk.
        """
        for attempt in range(1, attempts + 1):
            after = state.copy()  # a failed attempt's progress is dropped, as its transaction is rolled back
            try:
                with session_scope(self.engine) as session:
                    filled = self._fill_chunk(session, after)
                    session.commit()
                return filled, after
            except OperationalError as exc:
                if getattr(exc.orig, "pgcode", None) not in _LOCK_CONFLICTS or attempt == attempts:
                    raise
                log.warning("backfill chunk hit a lock conflict (attempt %d/%d); retrying", attempt, attempts)
                time.sleep(random.uniform(0.05, 0.25) * attempt)
        raise AssertionError("unreachable")

    def _fill_chunk(self, session: Session, state: BackfillProgress) -> int:
        """Embed and write the next chunk, recording progress in `state` and on the row; 0 when none is left.

        A text the model raises on is embedded alone, so it fails alone: it is logged, kept out of later chunks
        and runs (until the version is activated again) and left without a vector. A model that fails on a plain
        sentence, or on more texts than it embeds (beyond a few), stops the backfill.
        """
        rows = session.execute(
            text(f"SELECT i.id, i.event_id, i.text {_MISSING} ORDER BY i.id LIMIT :n"),
            {"version": self.model_version_id, "failed": state.failed, "n": self.chunk},
        ).all()
        if rows:
            kept, embeddings, errors = embed_each_on_failure(self.embedder, [r.text for r in rows])
            if errors:
                self._failed_alone(rows, errors, state)
            if embeddings is not None:
                state.done += fill_embeddings(
                    session, model_version_id=self.model_version_id, embeddings=embeddings,
                    texts_of=[(rows[i].id, rows[i].event_id) for i in kept],
                )  # fmt: skip
            state.total = max(state.total, state.done)
        else:
            state.finished_at = datetime.now(UTC).isoformat()
        set_backfill(session, self.model_version_id, state.as_json())
        return len(rows)

    def _record(self, state: BackfillProgress) -> None:
        with session_scope(self.engine) as session:
            set_backfill(session, self.model_version_id, state.as_json())
            session.commit()

    def _failed_alone(self, rows: Sequence[Any], errors: dict[int, str], state: BackfillProgress) -> None:
        """Note the items the model raised on; stop if it is the model that is broken, not those texts."""
        first_error = next(iter(errors.values()))[:200]
        if len(errors) == len(rows):
            try:  # a chunk can be all poison texts; a model that fails on a plain sentence is broken
                self.embedder.embed(["a plain sentence to check the model"])
            except Exception as exc:
                raise ModelLoadError(
                    f"model version {self.model_version_id} fails on every text ({type(exc).__name__}: {exc}); "
                    "`tagworker model rollback` goes back to the previous version"
                ) from exc
        failed = [rows[i].id for i in errors]
        state.failed.extend(failed)
        log.error("backfill of model version %d: the model failed on items %s (%s); they stay without a vector "
                  "under it", self.model_version_id, failed[:20], first_error)  # fmt: skip
        if len(state.failed) > max(_MOST_FAILURES, state.done):
            raise ModelLoadError(
                f"model version {self.model_version_id} failed on {len(state.failed)} texts and embedded only "
                f"{state.done}; the backfill stops (`tagworker model rollback` goes back)"
            )

    def _superseded(self) -> bool:
        with self.engine.connect() as connection:
            active = active_version_id(connection)
        if active != self.model_version_id:
            log.info("backfill of model version %d stops: version %s is active now", self.model_version_id, active)
            return True
        return False
