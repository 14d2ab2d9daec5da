"""Faults the worker must refuse or serialize: a missing model, concurrent clustering runs, a bad-input fuzz."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import text

from worker.chaos.checker import Counts, wait_settled
from worker.chaos.faults import pickle_task_body
from worker.chaos.ledger import Ledger, stream
from worker.chaos.outcome import FaultResult, Progress, Watch
from worker.chaos.payloads import SQL_TEXTS, generate
from worker.chaos.stack import MAX_TEXT_CHARS, QUEUE, ChaosStack
from worker.chaos.stream_faults import ChaosParams
from worker.clustering import ClusteringService, RunSummary
from worker.settings import ClusteringSettings

LOCKED_OUT = "another clustering run is in progress"


def model_missing(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """A worker whose model directory is missing, or is no model, exits with a clear message and consumes nothing."""
    watch = Watch.begin(stack, "model_missing", report)
    queue = "chaos-no-model"
    ledger = Ledger()
    ledger.publish(stack.producer, stream(50, topic="model_missing"), queue=queue)
    not_a_model = stack.data_dir / "not-a-model"
    not_a_model.mkdir(exist_ok=True)
    refused, clear, untouched = 0, 0, 0
    for path in (stack.data_dir / "no-such-model", not_a_model):
        marks = stack.log_marks()
        worker = stack.launch("no-model-worker", queues=queue, TAGWORKER_MODEL__NAME_OR_PATH=str(path))
        try:
            refused += worker.wait(timeout=120) != 0
        except subprocess.TimeoutExpired:
            worker.kill()
        clear += "TAGWORKER_MODEL__NAME_OR_PATH" in stack.log_text(since=marks)
        untouched += stack.queue_length(queue) == len(ledger.entries)
    # Then a worker with its model takes the queue over, so that the checker can account for every event.
    stack.ensure_worker()
    stack.producer.control.add_consumer(queue, reply=True, timeout=10)
    result = watch.settle(ledger, timeout_s=params.settle_s, refused_starts=refused, clear_messages=clear,
                          queue_untouched=untouched, bad_model_dirs=2)  # fmt: skip
    stack.producer.control.cancel_consumer(queue, reply=True, timeout=10)
    return result


def concurrent_runs(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Two clustering runs started at the same moment: one runs, the other is turned away by the lock.

    Counts: sent = runs started, stored = runs that did the work, rejected = runs turned away, lost = runs left
    unfinished, duplicate_effects = runs that did the work at overlapping times.
    """
    started = time.monotonic()
    report("concurrent_runs", 0, 2)
    _enough_feedback(stack, params)
    with stack.engine.connect() as conn:
        version = conn.execute(text("SELECT id FROM model_versions WHERE status = 'active'")).scalar_one()
    service = ClusteringService(engine=stack.engine, model_version_id=version, settings=ClusteringSettings())
    barrier = threading.Barrier(2)
    summaries: list[RunSummary] = []

    def run() -> None:
        barrier.wait()
        summaries.append(service.run())

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report("concurrent_runs", 2, 2)
    ran = [s for s in summaries if LOCKED_OUT not in (s.message or "")]
    with stack.engine.connect() as conn:
        overlapping = conn.execute(
            text("SELECT count(*) FROM cluster_runs a JOIN cluster_runs b ON a.id < b.id "
                 "WHERE a.id = ANY(:ids) AND b.id = ANY(:ids) "
                 "AND a.started_at < coalesce(b.finished_at, now()) AND b.started_at < coalesce(a.finished_at, now())"),
            {"ids": [s.run_id for s in ran]},
        ).scalar_one()  # fmt: skip
        unfinished = conn.execute(
            text("SELECT count(*) FROM cluster_runs WHERE id = ANY(:ids) AND finished_at IS NULL"),
            {"ids": [s.run_id for s in summaries]},
        ).scalar_one()
    counts = Counts(sent=2, stored=len(ran), rejected=2 - len(ran), lost=int(unfinished),
                    duplicate_effects=int(overlapping))  # fmt: skip
    return FaultResult(counts, round(time.monotonic() - started, 1), {"statuses": sorted(s.status for s in summaries)})


def _enough_feedback(stack: ChaosStack, params: ChaosParams, n: int = 200) -> None:
    """Store some feedback first when run alone: a run over too few items would skip before taking the lock."""
    with stack.engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM items WHERE kind = 'feedback'")).scalar_one()
    if stored < n:
        stack.ensure_worker()
        ledger = Ledger()
        ledger.publish(stack.producer, stream(n, topic="clustering"), queue=QUEUE)
        wait_settled(stack.engine, ledger, timeout_s=params.settle_s)


def publish_refusable(stack: ChaosStack, ledger: Ledger, producer: Celery | None = None) -> Path:
    """A pickle whose loading would create a file, and bodies that are not UTF-8; returns that file's path."""
    producer = producer or stack.producer
    marker = stack.data_dir / f"pickle-ran-{uuid.uuid4().hex[:8]}"
    ledger.publish_refusable(producer, queue=QUEUE, body=pickle_task_body(marker),
                             content_type="application/x-python-serialize", log_token=marker.name)  # fmt: skip
    for body in (b'[["\xff\xfe not UTF-8"], {}, {}]', b"\xc3\x28\xa0\xa1"):
        ledger.publish_refusable(producer, queue=QUEUE, body=body, content_type="application/json",
                                 content_encoding="utf-8")  # fmt: skip
    return marker


def fuzz(stack: ChaosStack, params: ChaosParams, report: Progress) -> FaultResult:
    """Generated bad (and good) payloads: each is stored or rejected with a reason, and the worker lives on."""
    watch = Watch.begin(stack, "fuzz", report)
    worker = stack.ensure_worker()
    payloads = generate(params.fuzz, max_text_chars=MAX_TEXT_CHARS)
    ledger = Ledger()
    ledger.publish(stack.producer, payloads, queue=QUEUE)
    marker = publish_refusable(stack, ledger)
    result = watch.settle(ledger, timeout_s=params.settle_s)
    with stack.engine.connect() as conn:
        sql = "SELECT count(*) FROM rejected_events WHERE status = 'failed' AND message_id = ANY(:m)"
        failed = conn.execute(text(sql), {"m": [e.message_id for e in ledger.entries]}).scalar_one()
    result.checks.update(
        failed_not_invalid=int(failed), payloads=len(payloads), refusable_messages=3, pickle_executed=marker.exists(),
        worker_survived=worker.poll() is None, **sql_texts_verbatim(stack, payloads),
    )  # fmt: skip
    return result


def sql_texts_verbatim(stack: ChaosStack, payloads: list[Any]) -> dict[str, int]:
    """Stored items whose text looks like SQL, and how many of them hold exactly the text sent (never run).

    Only event ids sent with one text count: the fuzz reuses ids on purpose, and a reused id whose first use
    was rejected is legitimately stored with the second text.
    """
    texts: dict[str, set[Any]] = {}
    for p in payloads:
        if isinstance(p, dict) and isinstance(p.get("event_id"), str):
            texts.setdefault(p["event_id"], set()).add(str(p.get("text")))
    sent = {e: t.pop() for e, t in texts.items() if len(t) == 1 and next(iter(t)) in SQL_TEXTS}
    with stack.engine.connect() as conn:
        stored, verbatim = conn.execute(
            text("SELECT count(DISTINCT i.id), count(DISTINCT i.id) FILTER (WHERE i.text = s.t) FROM items i "
                 "JOIN unnest(CAST(:ids AS text[]), CAST(:texts AS text[])) AS s(e, t) ON i.event_id::text = s.e"),
            {"ids": list(sent), "texts": list(sent.values())},
        ).one()  # fmt: skip
    return {"sql_texts_stored": int(stored), "sql_texts_stored_verbatim": int(verbatim)}
