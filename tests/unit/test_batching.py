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
