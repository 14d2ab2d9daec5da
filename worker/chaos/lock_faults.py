"""Two runs of a locked job started at the same moment: clustering and retraining each run once at a time.

Counts for both scenarios: sent = runs started, stored = runs that did the work, rejected = runs turned away by
the advisory lock, lost = runs left unfinished, duplicate_effects = runs that did the work at overlapping times.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import text

from worker.chaos.checker import Counts, wait_settled
from worker.chaos.ledger import Ledger, stream
from worker.chaos.outcome import FaultResult, Progress
from worker.chaos.stack import QUEUE, ChaosStack
from worker.chaos.stream_faults import ChaosParams
from worker.clustering import ClusteringService
from worker.db import session_scope
from worker.retraining import RetrainService
from worker.settings import ClusteringSettings, Settings, TrainingSettings
from worker.store.item_tags import apply_correction

T = TypeVar("T")
CLUSTERING_LOCKED_OUT = "another clustering run is in progress"
RETRAIN_LOCKED_OUT = "another retraining run is in progress"
# A few real steps, and a gate no candidate passes: the stack's active model stays what the other faults use.
TINY_TRAINING = {
    "max_steps": 4,
    "batch_size": 8,
    "positives_per_text": 2,
    "holdout_share": 0.3,
    "min_gain": 100,
    "min_ndcg_gain": 100,
}
# The time window both a `cluster_runs` and a `model_versions` row span: (id, start, end).
_OVERLAPS = (
    "SELECT count(*) FROM ({rows}) a JOIN ({rows}) b ON a.id < b.id "
    "WHERE a.started < coalesce(b.ended, now()) AND b.started < coalesce(a.ended, now())"
)


def at_once(job: Callable[[], T], times: int = 2) -> list[T]:
    """Start `job` in `times` threads released by one barrier; their results in finishing order."""
    barrier = threading.Barrier(times)
    results: list[T] = []

    def run() -> None:
        barrier.wait()
        results.append(job())

    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def concurrent_runs(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Two clustering runs started at the same moment: one runs, the other is turned away by the lock."""
    started = time.monotonic()
    report("concurrent_runs", 0, 2)
    enough_feedback(stack, params)
    service = ClusteringService(engine=stack.engine, model_version_id=_active(stack), settings=ClusteringSettings())
    summaries = at_once(service.run)
    report("concurrent_runs", 2, 2)
    ran = [s.run_id for s in summaries if CLUSTERING_LOCKED_OUT not in (s.message or "")]
    rows = "SELECT id, started_at AS started, finished_at AS ended FROM cluster_runs WHERE id = ANY(:ids)"
    with stack.engine.connect() as conn:
        overlapping = conn.execute(text(_OVERLAPS.format(rows=rows)), {"ids": ran}).scalar_one()
        unfinished = conn.execute(
            text("SELECT count(*) FROM cluster_runs WHERE id = ANY(:ids) AND finished_at IS NULL"),
            {"ids": [s.run_id for s in summaries]},
        ).scalar_one()
    counts = Counts(sent=2, stored=len(ran), rejected=2 - len(ran), lost=int(unfinished),
                    duplicate_effects=int(overlapping))  # fmt: skip
    return FaultResult(counts, round(time.monotonic() - started, 1), {"statuses": sorted(s.status for s in summaries)})


def concurrent_retrains(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Two forced retraining runs started at the same moment, over human corrections: one trains, one is turned away.

    The candidate is trained for real (a few steps) and then kept out by the gate, so the stack keeps its model.
    """
    started = time.monotonic()
    report("concurrent_retrains", 0, 2)
    enough_feedback(stack, params)
    active = _active(stack)
    labelled = correct_some_feedback(stack)
    training = TrainingSettings(store_dir=stack.data_dir / "models", **TINY_TRAINING)  # type: ignore[arg-type]
    service = RetrainService(engine=stack.engine, settings=Settings(data_dir=stack.data_dir, training=training))
    with stack.engine.connect() as conn:
        before = conn.execute(text("SELECT coalesce(max(id), 0) FROM model_versions")).scalar_one()
    summaries = at_once(lambda: service.run(force=True))
    report("concurrent_retrains", 2, 2)
    rows = ("SELECT id, created_at AS started, finished_at AS ended FROM model_versions "
            "WHERE id > :before AND parent_id IS NOT NULL")  # fmt: skip
    with stack.engine.connect() as conn:
        overlapping = conn.execute(text(_OVERLAPS.format(rows=rows)), {"before": before}).scalar_one()
        unfinished = conn.execute(
            text("SELECT count(*) FROM model_versions WHERE id > :before AND status = 'training'"), {"before": before}
        ).scalar_one()
    ran = [s for s in summaries if RETRAIN_LOCKED_OUT not in s.reason]
    counts = Counts(sent=2, stored=len(ran), rejected=2 - len(ran), lost=int(unfinished),
                    duplicate_effects=int(overlapping))  # fmt: skip
    checks: dict[str, Any] = {
        "statuses": sorted(s.status for s in summaries),
        "labelled_items": labelled,
        "active_model_kept": _active(stack) == active,
    }
    return FaultResult(counts, round(time.monotonic() - started, 1), checks)


def correct_some_feedback(stack: ChaosStack, per_tag: int = 12) -> int:
    """Give stored feedback items a human topic tag, as `tagworker tag correct` does; returns how many."""
    with stack.engine.connect() as conn:
        tags = (
            conn.execute(
                text("SELECT name FROM tags WHERE facet = 'topic' AND retired_at IS NULL ORDER BY name LIMIT 3")
            )
            .scalars()
            .all()
        )
        items = (
            conn.execute(
                text("SELECT id FROM items WHERE kind = 'feedback' ORDER BY id LIMIT :n"), {"n": per_tag * len(tags)}
            )
            .scalars()
            .all()
        )
    now = datetime.now(UTC)
    with session_scope(stack.engine) as session:
        for i, item_id in enumerate(items):
            apply_correction(session, event_id=uuid.uuid4(), item_id=item_id, added=[tags[i % len(tags)]],
                             removed=[], actor="chaos", corrected_at=now)  # fmt: skip
        session.commit()
    return len(items)


def enough_feedback(stack: ChaosStack, params: ChaosParams, n: int = 200) -> None:
    """Store some feedback first when run alone: a run over too few items would skip before taking the lock."""
    with stack.engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM items WHERE kind = 'feedback'")).scalar_one()
    if stored < n:
        stack.ensure_worker()
        ledger = Ledger()
        ledger.publish(stack.producer, stream(n, topic="clustering"), queue=QUEUE)
        wait_settled(stack.engine, ledger, timeout_s=params.settle_s)


def _active(stack: ChaosStack) -> int:
    with stack.engine.connect() as conn:
        return int(conn.execute(text("SELECT id FROM model_versions WHERE status = 'active'")).scalar_one())
