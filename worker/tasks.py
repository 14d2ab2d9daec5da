"""Celery tasks: thin wrappers over `worker.ingest`; producers call them by name with JSON."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from celery_batches import SimpleRequest

from worker.batching import IngestBatches
from worker.celery_app import app
from worker.corrections import apply_arrived_corrections
from worker.db import session_scope
from worker.maintenance import recent_cluster_run, recent_tagger_fit
from worker.pipeline.validate import read_message
from worker.runtime import get_runtime
from worker.settings import get_settings

log = logging.getLogger(__name__)
_batching = get_settings().batching


@app.task(
    base=IngestBatches,
    name="tagworker.ingest",
    flush_every=_batching.flush_every,
    flush_interval=_batching.flush_interval_s,
    acks_late=True,
)
def ingest(requests: list[SimpleRequest]) -> dict[str, Any]:
    """Validate, embed and store a micro-batch of events: `send_task("tagworker.ingest", args=[event])`."""
    # Per request: a hand-made body with args or kwargs of the wrong shape is rejected alone, not the batch.
    messages = [read_message(r.id, r.args, r.kwargs) for r in requests]
    return get_runtime().ingest.run(messages).as_dict()


# Maintenance is not redelivered when its process dies (OOM): its beat messages never expire, so a redelivered
# one that kills its process again would come back for ever. The next beat message runs it afresh.
@app.task(name="tagworker.refit_tags", acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def refit_tags(force: bool = False, scheduled: bool = False) -> dict[str, Any]:
    """Apply corrections still waiting for stored items, refit the taggers when corrections or the taxonomy
    changed, then re-tag stored items.

    A message from beat (`scheduled`) skips the refit when a tagger was fitted less than half a refit interval ago:
    beat's messages bunch up behind an ingest backlog (worker/maintenance.py).
    """
    runtime = get_runtime()
    engine, version = runtime.ingest.engine, runtime.model_version_id
    with session_scope(engine) as session:
        if late := apply_arrived_corrections(session):
            log.info("applied %d corrections that waited for items already stored", late)
        session.commit()
    interval_s = runtime.settings.tagging.refit_interval_s
    if scheduled and (why := recent_tagger_fit(engine, model_version_id=version, interval_s=interval_s)):
        log.info("refit skipped: %s", why)
        return {"fitted": None, "retagged": 0, "skipped": why}
    tagging = runtime.tagging
    fitted = tagging.fit(force=force)
    retagged = tagging.retag_pending()
    return {"fitted": fitted.tagger_id if fitted else None, "retagged": retagged}


@app.task(name="tagworker.cluster_feedback", acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def cluster_feedback(scheduled: bool = False) -> dict[str, Any]:
    """Full clustering run of the feedback (beat, hourly by default); one at a time across all workers.

    A message from beat (`scheduled`) skips when a run started less than half an interval ago: beat's messages
    bunch up behind an ingest backlog (worker/maintenance.py).
    """
    runtime = get_runtime()
    engine, version = runtime.ingest.engine, runtime.model_version_id
    interval_s = runtime.settings.clustering.interval_s
    if scheduled and (why := recent_cluster_run(engine, model_version_id=version, interval_s=interval_s)):
        log.info("clustering skipped: %s", why)
        return {"status": "skipped", "message": why}
    return dataclasses.asdict(runtime.clustering.run())


# Not redelivered when its process dies: a fine-tune killed for memory would be killed again at once, over and
# over until the message expired (a day), each time taking that process's ingest batch down with it. The next run
# (beat, or `tagworker retrain`) marks the killed one failed and decides afresh.
@app.task(name="tagworker.retrain", acks_late=True, reject_on_worker_lost=False, ignore_result=True)
def retrain(force: bool = False) -> dict[str, Any]:
    """Fine-tune on human labels when enough arrived (or `force`), gate, promote; then re-embed."""
    from worker.retraining import RetrainService

    runtime = get_runtime()
    summary = RetrainService(engine=runtime.ingest.engine, settings=runtime.settings).run(force=force)
    if summary.status == "promoted":
        backfill.delay()
    return summary.as_dict()


@app.task(name="tagworker.backfill", acks_late=True, ignore_result=True)
def backfill() -> dict[str, Any]:
    """Re-embed items under the active version (the runtime switches to it first), then refit and re-cluster."""
    runtime = get_runtime()
    summary = runtime.backfill.run()
    if summary.status == "superseded":
        # Another version became active meanwhile; its own backfill may have found the lock taken, so hand over
        # rather than wait for beat. After one check interval, the next task's runtime has switched to it.
        backfill.apply_async(countdown=runtime.settings.tagging.check_interval_s)
    elif summary.status == "done" and summary.embedded:
        runtime.tagging.fit(force=True)
        runtime.tagging.retag_pending()
        runtime.clustering.run()
    return summary.as_dict()
