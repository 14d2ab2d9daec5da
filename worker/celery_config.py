"""What Celery is told: delivery at-least-once into an idempotent store, batching, routes and the beat schedule.

Apart from the app (worker/celery_app.py), so that it can be read and tested without a broker to connect to.
"""

from __future__ import annotations

import math
import ssl

from worker.broker import TRANSPORT
from worker.settings import Settings

# Seconds a plain Redis command may wait for its reply before the connection counts as lost (and is retried).
SOCKET_TIMEOUT_S = 30


def celery_config(settings: Settings, broker_url: str) -> dict[str, object]:
    """Celery settings that make redelivery safe and batching effective."""
    batching = settings.batching
    return {
        "broker_url": broker_url,
        # Our Redis transport closes the window where a killed worker loses a message it took (worker/broker.py).
        **_redis_transport(broker_url),
        "broker_connection_retry_on_startup": True,
        # JSON only: a pickle message is refused before any code sees it.
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "task_ignore_result": True,
        # Ack after the batch is written; a worker that dies mid-batch leaves its messages to be redelivered.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # Room for two batches per process: one being embedded, the next filling up.
        "worker_prefetch_multiplier": max(1, math.ceil(2 * batching.flush_every)),
        "broker_transport_options": {
            "visibility_timeout": settings.broker.visibility_timeout_s,
            "unacked_restore_interval": max(1, min(10, settings.broker.visibility_timeout_s // 6)),
            "unacked_restore_throttle": 1,
            # A half-open connection must not hang the worker's event loop on a plain command (acks, the queue
            # lengths each take reads, the sweep): kombu waits for ever by default. Blocking takes wait 1 s at most.
            "socket_timeout": SOCKET_TIMEOUT_S,
        },
        "task_default_queue": settings.broker.ingest_queue,
        "task_routes": {
            "tagworker.ingest": {"queue": settings.broker.ingest_queue},
            "tagworker.refit_tags": {"queue": settings.broker.ingest_queue},
            "tagworker.cluster_feedback": {"queue": settings.broker.ingest_queue},
            "tagworker.retrain": {"queue": settings.broker.training_queue},
            "tagworker.backfill": {"queue": settings.broker.training_queue},
        },
        "worker_hijack_root_logger": False,
        # Messages Celery refuses before any task runs get a rejected_events row, not only a log line.
        "worker_consumer": "worker.refused:RecordingConsumer",
        "worker_send_task_events": False,
        "beat_schedule": {
            # On the ingest queue, behind any backlog: they never expire, so a backlog delays them instead of
            # dropping every one; those that bunched up skip cheaply when it drains (worker/maintenance.py).
            # Cheap when nothing changed (two queries).
            "refit-tags": _every("tagworker.refit_tags", settings.tagging.refit_interval_s, expires=False),
            "cluster-feedback": _every("tagworker.cluster_feedback", settings.clustering.interval_s, expires=False),
            # Retrains only when enough new human labels arrived; the advisory lock keeps it to one run.
            "retrain": _every("tagworker.retrain", settings.training.interval_s),
            # Catches up vectors after a promotion or rollback (and after a backfill was interrupted).
            "backfill": _every("tagworker.backfill", settings.training.backfill_interval_s),
        },
    }


def _redis_transport(broker_url: str) -> dict[str, object]:
    """Our transport for `redis://` and `rediss://` (TLS, as managed Redis mostly is).

    Named explicitly, a transport makes kombu stop reading TLS from the scheme, so `rediss://` asks for it here:
    verifying the server's certificate (kombu's own default for `rediss://` is not to). `ssl_cert_reqs`,
    `ssl_ca_certs`, `ssl_certfile` and `ssl_keyfile` in the URL's query take precedence.
    """
    scheme = broker_url.partition("://")[0].lower()
    if scheme not in ("redis", "rediss"):
        return {}
    tls = {"broker_use_ssl": {"ssl_cert_reqs": ssl.CERT_REQUIRED}} if scheme == "rediss" else {}
    return {"broker_transport": TRANSPORT, **tls}


def _every(task: str, seconds: float, *, expires: bool = True) -> dict[str, object]:
    """A beat entry; by default it expires after one period, so that a backlog never stacks runs up.

    `expires=False` for a task on the ingest queue: behind a backlog longer than the period every message would
    expire before a worker reached it, and the task would not run at all until the backlog was gone.
    """
    if expires:
        return {"task": task, "schedule": seconds, "options": {"expires": seconds}}
    # `scheduled` lets the task tell beat's messages, which may have bunched up, from one a person sent.
    return {"task": task, "schedule": seconds, "options": {}, "kwargs": {"scheduled": True}}
