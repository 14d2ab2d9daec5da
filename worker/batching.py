"""Micro-batching with celery-batches, with acks that match the batch's outcome.

Why celery-batches rather than our own buffer: it keeps one Redis message per event (so producers need only
`send_task`, and redelivery works per event), fills a batch from the worker's prefetch, and flushes on size
or time. Two gaps are closed here: the stock `flush` acks even when the pool process died, and has no way to
hand messages back; this one requeues on a lost process or when the batch asks for it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from typing import Any

from celery import Celery
from celery.worker.consumer import Consumer
from celery.worker.request import Request
from celery_batches import Batches, SimpleRequest
from celery_batches.trace import apply_batches_task

log = logging.getLogger(__name__)


class IngestBatches(Batches):
    """Batches whose messages are acked only when the batch says it is done with them."""

    abstract = True

    def Strategy(self, task: Batches, app: Celery, consumer: Consumer) -> Callable[..., None]:
        """celery-batches' strategy, with a flush timer that survives a reconnect to the broker.

        After losing the broker, Celery clears the event loop's timers and builds the task strategies again.
        celery-batches kept its reference to the dropped flush timer and so never started another one: from
        then on a batch was flushed only when the running count of messages reached a multiple of
        `flush_every`, and the last few messages of a stream waited for more traffic or for the visibility
        timeout (13-40 s per stream in the chaos suite after its Redis restart; with real traffic, up to an
        hour). A fresh strategy starts a fresh timer on its first message, or at once if requests are waiting
        (a pool restart rebuilds strategies on a live loop).
        """
        stale: Any = self._tref  # type: ignore[has-type]
        if stale is not None:
            stale.cancel()
            self._tref = None
        strategy = super().Strategy(task, app, consumer)
        if self._buffer.qsize() or self._pending.qsize():
            self._tref = consumer.timer.call_repeatedly(self.flush_interval, self._do_flush)
        return strategy  # type: ignore[no-any-return]

    def flush(self, requests: Collection[Request]) -> Any:
        batch = list(requests)
        if shutting_down():
            # Celery keeps firing timers (this flush among them) while it joins the pool on a warm shutdown,
            # and may no longer read results: a batch sent now can run with nobody taking its result, keeping
            # its pool process until `bound_exit_wait`'s cap (worker/processes.py, the general mend). It
            # comes back from the broker anyway, so hand it back at once instead.
            log.info("worker shutting down: handing back a batch of %d unprocessed", len(batch))
            requeue(batch)
            return None
        payload = ([SimpleRequest.from_request(r) for r in batch],)

        def on_return(result: Any) -> None:
            if isinstance(result, dict) and not result.get("requeue"):
                for request in batch:
                    request.acknowledge()
                return
            log.warning("batch of %d not done (%r); requeueing its messages", len(batch), type(result).__name__)
            requeue(batch)

        def on_error(exc_info: Any) -> None:
            log.error("pool process lost during a batch of %d (%s); requeueing", len(batch), exc_info)
            requeue(batch)

        return self._pool.apply_async(
            apply_batches_task, (self, payload, 0, None), callback=on_return, error_callback=on_error
        )


def shutting_down() -> bool:
    """Whether this worker received a warm or cold shutdown (SIGTERM, SIGQUIT, Ctrl-C)."""
    from celery.worker import state

    # As celery.worker.state.maybe_shutdown tests them: an exit code of 0 means stop too.
    stop, terminate = state.should_stop, state.should_terminate
    return (stop is not None and stop is not False) or (terminate is not None and terminate is not False)


def requeue(batch: list[Request]) -> None:
    for request in batch:
        request.reject(requeue=True)
