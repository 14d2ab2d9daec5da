"""The Celery app: configuration only. Delivery is at-least-once into an idempotent store."""

from __future__ import annotations

import faulthandler
import os
import sys
from typing import Any

from celery import Celery, signals

from worker.celery_config import celery_config
from worker.processes import (
    STACKS_SIGNAL,
    bound_exit_wait,
    is_prefork,
    most_processes,
    threads_per_process,
    usable_cores,
)
from worker.services import resolve
from worker.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> Celery:
    """A configured app; the broker URL comes from settings or the running embedded Redis."""
    settings = settings or get_settings()
    app = Celery("tagworker", include=["worker.tasks", "worker.refused"])
    app.conf.update(celery_config(settings, resolve(settings).broker_url))
    return app


app = create_app()


@signals.worker_process_init.connect
def _prepare_pool_process(**_: object) -> None:
    """A forked child drops the parent's database sockets and starts loading its own model copy."""
    from worker.db import dispose_all
    from worker.runtime import preload_in_background

    bound_exit_wait()
    dispose_all()
    preload_in_background()


@signals.worker_init.connect
def _dump_stacks_on_signal(**_: object) -> None:
    """`kill -USR2 PID` writes every thread's stack to the worker's log: what a stuck process waits on, without
    stopping it. Registered in the main process before the pool forks, so pool processes inherit it. It writes
    to the real stderr: by the time the pool forks, Celery has replaced `sys.stderr` with a logger proxy that
    has no file descriptor (registering in a pool process raised, and skipped the rest of its set-up)."""
    if sys.__stderr__ is not None:
        faulthandler.register(STACKS_SIGNAL, file=sys.__stderr__, all_threads=True, chain=False)


@signals.worker_init.connect
def _refuse_without_model(**_: object) -> None:
    """Refuse to start (and so to consume) when the model directory is missing or unreadable, or when the
    configured model is not the active version (each batch would load it, be refused, and come back)."""
    from worker.errors import ModelLoadError
    from worker.runtime import check_model_config, check_serves_active

    try:
        check_model_config(get_settings())
        check_serves_active(get_settings())
    except ModelLoadError as exc:
        raise SystemExit(f"tagworker worker: {exc}") from exc


@signals.worker_init.connect
def _refuse_old_redis(sender: Any = None, **_: object) -> None:
    """Refuse to start on a Redis older than 6.2, where taking the first message would fail with `unknown command
    'BLMOVE'`. A Redis that cannot be reached yet is left to Celery, which retries the connection itself."""
    from worker.queues import broker_redis_version
    from worker.server_versions import redis_problem

    version = broker_redis_version(sender.app.conf.broker_url if sender is not None else app.conf.broker_url)
    if version is not None and (problem := redis_problem(version)):
        raise SystemExit(f"tagworker worker: {problem}")


@signals.worker_init.connect
def _share_cores(sender: Any = None, **_: object) -> None:
    """Give each pool process its share of the cores when TORCH_THREADS is 0 (auto).

    Without this, a bare `celery worker -c N` would start N processes that each use every core (torch and ONNX
    Runtime both default to all of them). With `--autoscale MAX,MIN` the cores are shared among MAX processes,
    so a fully grown pool does not oversubscribe them. It runs in the parent before the fork, so the children
    inherit it.
    """
    if get_settings().model.torch_threads == 0:
        processes = most_processes(
            concurrency=int(sender.concurrency or 1), autoscale=getattr(sender, "options", {}).get("autoscale")
        )
        threads = threads_per_process(cores=usable_cores(), prefork=is_prefork(sender.pool_cls), concurrency=processes)
        os.environ["TAGWORKER_MODEL__TORCH_THREADS"] = str(threads)
        get_settings.cache_clear()
