"""IngestBatches.flush: messages are acked only when the batch says it is done, otherwise requeued."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from worker.batching import IngestBatches


@dataclass
class FakeRequest:
    """What flush and SimpleRequest.from_request read from a Celery request, recording acks and rejects."""

    id: str
    name: str = "tagworker.ingest"
    _payload: tuple[Any, ...] = ((), {}, {})
    delivery_info: dict[str, Any] = field(default_factory=dict)
    hostname: str = "worker@test"
    reply_to: str | None = None
    correlation_id: str | None = None
    request_dict: dict[str, Any] = field(default_factory=dict)
    outcome: list[str] = field(default_factory=list)

    def acknowledge(self) -> None:
        self.outcome.append("ack")

    def reject(self, requeue: bool = False) -> None:
        self.outcome.append("requeue" if requeue else "drop")


@dataclass
class FakePool:
    """Records the one apply_async call and lets the test play the pool's part."""

    callback: Callable[[Any], None] | None = None
    error_callback: Callable[[Any], None] | None = None
    args: tuple[Any, ...] = ()

    def apply_async(self, fn: Any, args: tuple[Any, ...], *, callback: Any, error_callback: Any) -> str:
        self.args, self.callback, self.error_callback = args, callback, error_callback
        return "async-result"


@pytest.fixture
def flushed() -> tuple[FakePool, list[FakeRequest]]:
    task = IngestBatches()
    pool = FakePool()
    task._pool = pool  # the worker sets it; flush only calls apply_async on it
    requests = [FakeRequest("m1", _payload=(({"kind": "x"},), {}, {})), FakeRequest("m2")]
    assert task.flush(requests) == "async-result"
    return pool, requests


def test_the_batch_goes_to_the_pool_as_simple_requests(flushed: tuple[FakePool, list[FakeRequest]]) -> None:
    pool, _ = flushed

    [simple_requests] = pool.args[1]
    assert [r.id for r in simple_requests] == ["m1", "m2"]
    assert simple_requests[0].args == ({"kind": "x"},)


def test_a_finished_batch_acks_every_message(flushed: tuple[FakePool, list[FakeRequest]]) -> None:
    pool, requests = flushed
    assert pool.callback is not None

    pool.callback({"stored": 2, "requeue": False})

    assert [r.outcome for r in requests] == [["ack"], ["ack"]]


@pytest.mark.parametrize("result", [{"requeue": True}, None, "oops"], ids=["asked", "none", "not-a-dict"])
def test_a_batch_that_is_not_done_requeues_every_message(
    flushed: tuple[FakePool, list[FakeRequest]], result: Any
) -> None:
    pool, requests = flushed
    assert pool.callback is not None

    pool.callback(result)

    assert [r.outcome for r in requests] == [["requeue"], ["requeue"]]


def test_a_lost_pool_process_requeues_every_message(flushed: tuple[FakePool, list[FakeRequest]]) -> None:
    pool, requests = flushed
    assert pool.error_callback is not None

    pool.error_callback(("WorkerLostError", "signal 9"))

    assert [r.outcome for r in requests] == [["requeue"], ["requeue"]]


def started_strategy(task: IngestBatches, timer: Any) -> Any:
    """Build the strategy as Celery's consumer does at each (re)start, with a fake consumer around `timer`."""
    from types import SimpleNamespace

    from celery import Celery

    consumer = SimpleNamespace(
        pool=FakePool(), hostname="worker@test", connection_errors=(), event_dispatcher=None, timer=timer
    )
    return task.Strategy(task, Celery("test", set_as_current=False), consumer)


def test_a_reconnect_does_not_leave_the_flush_timer_dead() -> None:
    from kombu.asynchronous.timer import Timer

    task = IngestBatches()
    timer = Timer()
    started_strategy(task, timer)
    task._tref = timer.call_repeatedly(0.5, task._do_flush)  # what the first message of a stream does
    timer.clear()  # Celery's event loop after a broker connection error

    started_strategy(task, timer)  # Celery rebuilds the strategies after reconnecting

    # The next message starts a new timer (celery-batches only does so when it holds none).
    assert task._tref is None


def test_requests_waiting_when_the_strategy_is_rebuilt_get_a_timer_at_once() -> None:
    from kombu.asynchronous.timer import Timer

    task = IngestBatches()
    timer = Timer()
    task._buffer.put(FakeRequest("m1"))

    started_strategy(task, timer)

    assert task._tref is not None and len(timer) == 1


def test_a_batch_flushed_during_a_shutdown_is_handed_back_not_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Celery fires the flush timer while it joins the pool; a batch sent then kept its pool process alive
    for billiard's 30 s wait for the result to be read, past a 30 s SIGTERM grace (seen in CI)."""
    from celery.worker import state

    monkeypatch.setattr(state, "should_stop", 0)  # what the SIGTERM handler sets: the exit code, 0
    task = IngestBatches()
    pool = FakePool()
    task._pool = pool
    requests = [FakeRequest("m1"), FakeRequest("m2")]

    assert task.flush(requests) is None

    assert pool.args == (), "nothing was sent to the pool"
    assert [r.outcome for r in requests] == [["requeue"], ["requeue"]]
