"""Faults injected into a running stream: SIGKILL, SIGTERM, Redis and PostgreSQL restarts, a poison text.

Each one fills the queue with a stream of valid events, breaks something once the worker is part-way through,
and lets the checker account for every event. Workers are restarted only where the fault itself ends them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import text

from worker.chaos.faults import kill_worker, restart_postgres, restart_redis, terminate_worker
from worker.chaos.ledger import Ledger, stream
from worker.chaos.outcome import FaultResult, Progress, Watch, stored_count, wait_stored
from worker.chaos.poison import POISON_MARKER
from worker.chaos.stack import QUEUE, ChaosStack


@dataclass(frozen=True)
class ChaosParams:
    """How big each scenario is.

    Attributes:
        events: the SIGKILL stream; the other stream faults send `side_events`.
        kills: SIGKILLs spread evenly over the SIGKILL stream.
        side_events: events per SIGTERM, restart and poison stream.
        poisons: poison texts in the poison stream.
        fuzz: generated payloads (at least 2,000 for the issue's bar).
        grace_s: how long a SIGTERMed worker may take to finish or hand back its batch.
        concurrency: pool processes per worker (0: one per core).
    """

    events: int = 5000
    kills: int = 5
    side_events: int = 1000
    poisons: int = 5
    fuzz: int = 5000
    grace_s: float = 30.0
    concurrency: int = 0

    @property
    def settle_s(self) -> float:
        """Longest wait for a stream to be accounted for: generous, a timeout means events are lost."""
        return 120 + max(self.events, self.side_events, self.fuzz) / 10


def _started(stack: ChaosStack, name: str, n: int, report: Progress) -> tuple[Watch, Ledger]:
    watch = Watch.begin(stack, name, report)
    stack.ensure_worker()
    ledger = Ledger()
    report(name, 0, n)
    ledger.publish(stack.producer, stream(n, topic=name), queue=QUEUE)
    return watch, ledger


def sigkill(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """SIGKILL the worker's process group `kills` times during the stream; a new worker starts after each."""
    watch, ledger = _started(stack, "sigkill", params.events, report)
    stored_at_kills = []
    for k in range(params.kills):
        wait_stored(stack, ledger, (k + 1) * params.events // (params.kills + 1))
        assert stack.worker is not None
        kill_worker(stack.worker)
        stored_at_kills.append(stored_count(stack, ledger))
        stack.replace_worker()
    return watch.settle(ledger, timeout_s=params.settle_s, kills=len(stored_at_kills), stored_at_kills=stored_at_kills)


def sigterm(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """SIGTERM during a batch, as a deploy does: the worker must finish or hand back its batch within the grace."""
    watch, ledger = _started(stack, "sigterm", params.side_events, report)
    wait_stored(stack, ledger, params.side_events // 3)
    worker = stack.ensure_worker()
    log = stack.log_of[worker.pid]
    mark = log.stat().st_size
    exit_s = terminate_worker(worker, grace_s=params.grace_s, log=log)
    # Where it hung, for the report: what it logged after the SIGTERM, with the stacks terminate_worker asked for.
    with log.open("rb") as handle:
        handle.seek(mark)
        after = handle.read().decode(errors="replace").splitlines()
    hung = {} if exit_s is not None else {"log_after_sigterm": after[-400:]}
    stack.replace_worker()
    return watch.settle(
        ledger, timeout_s=params.settle_s, exited_within_grace=exit_s is not None, exit_seconds=exit_s,
        exit_code=worker.returncode, grace_s=params.grace_s, **hung,
    )  # fmt: skip


def _survives(stack: ChaosStack, watch: Watch, ledger: Ledger, params: ChaosParams, **checks: object) -> FaultResult:
    """Settle with the same worker; if it died, say so, start another and settle again to count what was lost."""
    worker = stack.ensure_worker()
    result = watch.settle(ledger, timeout_s=params.settle_s, **checks)
    survived = worker.poll() is None and stack.worker is worker
    if not survived:
        stack.replace_worker()
        result = watch.settle(ledger, timeout_s=params.settle_s, **checks)
    result.checks["worker_survived"] = survived
    return result


def redis_restart(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Shut Redis down (AOF written) mid-stream and start it again: the same worker must resume by itself.

    Afterwards one event is sent alone: only the batch timer can flush it (a reconnect once silenced that timer).
    """
    watch, ledger = _started(stack, "redis_restart", params.side_events, report)
    wait_stored(stack, ledger, params.side_events // 3)
    restart_redis(stack)
    result = _survives(stack, watch, ledger, params)
    result.checks["lone_event_s"] = _lone_event_seconds(stack, timeout_s=30)
    return result


def _lone_event_seconds(stack: ChaosStack, *, timeout_s: float) -> float | None:
    """Seconds until a single event is stored by the current worker; None if not within `timeout_s`."""
    started = time.monotonic()
    try:
        stack.wait_ready(stack.ensure_worker(), timeout_s=timeout_s)
    except TimeoutError:
        return None
    return round(time.monotonic() - started, 2)


def postgres_restart(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Restart PostgreSQL mid-write: batches retry with backoff or go back to Redis; none is half-written."""
    watch, ledger = _started(stack, "postgres_restart", params.side_events, report)
    wait_stored(stack, ledger, params.side_events // 3)
    restart_postgres(stack)
    result = _survives(stack, watch, ledger, params)
    result.checks["db_retries_logged"] = watch.log_lines("database error (attempt")
    result.checks["batches_handed_back"] = watch.log_lines("requeueing its messages")
    return result


def poison(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Texts that make the embedder raise: they alone fail, as `failed` rejections; the rest of the batch stores."""
    watch = Watch.begin(stack, "poison", report)
    stack.ensure_worker()
    events = stream(params.side_events, topic="poison")
    every = max(1, len(events) // max(1, params.poisons))
    poisoned = events[every // 2 :: every][: params.poisons]
    for event in poisoned:
        event["text"] += f" {POISON_MARKER}"
    ledger = Ledger()
    ids = ledger.publish(stack.producer, events, queue=QUEUE)
    poison_ids = [m for m, e in zip(ids, events, strict=True) if e in poisoned]
    result = _survives(stack, watch, ledger, params)
    with stack.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT status, reason, attempts FROM rejected_events WHERE message_id = ANY(:m)"), {"m": poison_ids}
        ).all()
    result.checks.update(
        poison_sent=len(poison_ids),
        poison_failed=sum(r.status == "failed" and "PoisonError" in r.reason for r in rows),
        poison_max_attempts=max((r.attempts for r in rows), default=0),
    )
    return result
