"""Re-embed stored items under the active model version, in chunks, after a promotion or a rollback.

Searches, taggers and clusters only ever compare vectors of one version, so while this runs they see the
items already re-embedded, never a mix. Progress is kept on the version's row (`tagworker status` shows it).
Items that workers still on the old version write meanwhile are caught by the next pass: the task loops
until no item lacks a vector for the active version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, text

from worker.db import session_scope
from worker.pipeline.embed import Embedder
from worker.store.items import write_embeddings
from worker.store.model_versions import set_backfill

log = logging.getLogger(__name__)

BACKFILL_LOCK = 7160406  # advisory lock key: one backfill at a time

_MISSING = """
    FROM items i WHERE NOT EXISTS (
        SELECT 1 FROM embeddings e WHERE e.item_id = i.id AND e.model_version_id = :version)
"""


@dataclass
class BackfillSummary:
    status: str
    embedded: int = 0
    remaining: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing_count(engine: Engine, version_id: int) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(text(f"SELECT count(*) {_MISSING}"), {"version": version_id}) or 0)


class BackfillService:
    """Fills in the vectors of one model version with that version's embedder."""

    def __init__(self, *, engine: Engine, embedder: Embedder, model_version_id: int, chunk: int) -> None:
        self.engine = engine
        self.embedder = embedder
        self.model_version_id = model_version_id
        self.chunk = chunk

    def run(self, progress: Callable[[int, int], None] = lambda *_: None) -> BackfillSummary:
        """Embed every item that has no vector for this version yet; skipped if another backfill runs."""
        started = time.perf_counter()
        with self.engine.connect() as lock:
            if not lock.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": BACKFILL_LOCK}):
                return BackfillSummary("skipped")
            lock.commit()
            try:
                embedded, total = self._fill(progress)
            finally:
                lock.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BACKFILL_LOCK})
                lock.commit()
        seconds = round(time.perf_counter() - started, 1)
        if embedded:
            log.info("backfill of model version %d: %d items in %.1fs", self.model_version_id, embedded, seconds)
        return BackfillSummary("done", embedded, total - embedded if total > embedded else 0, seconds)

    def _fill(self, progress: Callable[[int, int], None]) -> tuple[int, int]:
        total = missing_count(self.engine, self.model_version_id)
        if total == 0:
            return 0, 0
        state: dict[str, Any] = {"total": total, "done": 0, "started_at": datetime.now(UTC).isoformat()}
        done = 0
        while True:
            with session_scope(self.engine) as session:
                rows = session.execute(
                    text(f"SELECT i.id, i.text {_MISSING} ORDER BY i.id LIMIT :n"),
                    {"version": self.model_version_id, "n": self.chunk},
                ).all()
                if not rows:
                    state["finished_at"] = datetime.now(UTC).isoformat()
                    set_backfill(session, self.model_version_id, state)
                    session.commit()
                    return done, total
                embeddings = self.embedder.embed([r.text for r in rows])
                write_embeddings(
                    session, model_version_id=self.model_version_id, item_ids=[r.id for r in rows],
                    vectors=embeddings.vectors, chunks_total=embeddings.chunks_total,
                    chunks_used=embeddings.chunks_used,
                )  # fmt: skip
                done += len(rows)
                state["done"] = done
                state["total"] = max(total, done)
                set_backfill(session, self.model_version_id, state)
                session.commit()
            progress(done, state["total"])
