"""Faults the worker must refuse: a missing model, messages Celery cannot read, a bad-input fuzz."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from celery import Celery
from sqlalchemy import text

from worker.chaos.faults import pickle_task_body
from worker.chaos.ledger import Ledger, stream
from worker.chaos.outcome import FaultResult, Progress, Watch
from worker.chaos.payloads import SQL_TEXTS, generate
from worker.chaos.stack import MAX_TEXT_CHARS, QUEUE, ChaosStack
from worker.chaos.stream_faults import ChaosParams


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
