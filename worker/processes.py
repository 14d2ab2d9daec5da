"""Start and stop worker and beat processes (used by `tagworker up`, the demo, the benchmark and tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from worker.services import ServiceUrls

# Makes a worker process write every thread's stack to its log (registered in worker.celery_app).
STACKS_SIGNAL = signal.SIGUSR2


def usable_cores() -> int:
    """CPUs this process may run on (respects container limits set through affinity)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def is_prefork(pool: str | type) -> bool:
    """Whether a Celery pool (an alias such as "prefork" or "solo", or a pool class) runs tasks in child processes."""
    from celery.concurrency import get_implementation
    from celery.concurrency.prefork import TaskPool

    return issubclass(get_implementation(pool), TaskPool)


def most_processes(*, concurrency: int, autoscale: object = None) -> int:
    """How many pool processes may run at once: the MAX of `--autoscale MAX[,MIN]` when given, else `concurrency`.

    Celery reads `--autoscale` after the worker_init signal, so at that point the option is still raw: a
    "MAX,MIN" string from the command line, or a (max, min) sequence from code.
    """
    top = autoscale.partition(",")[0] if isinstance(autoscale, str) else None
    if isinstance(autoscale, list | tuple) and autoscale:
        top = autoscale[0]
    try:
        return max(1, int(top)) if top not in (None, "") else max(1, concurrency)
    except (TypeError, ValueError):
        return max(1, concurrency)  # Celery itself refuses a malformed --autoscale a moment later


def threads_per_process(*, cores: int, prefork: bool, concurrency: int) -> int:
    """CPU threads for each worker process: prefork's processes share the cores; a solo or thread pool is one
    process and gets them all."""
    return max(1, cores // max(1, concurrency)) if prefork else max(1, cores)


def service_env(urls: ServiceUrls, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: explicit URLs, so it needs no embedded-server lookup."""
    env = dict(os.environ)
    env.update(
        TAGWORKER_DATABASE__URL=urls.database_url,
        TAGWORKER_BROKER__URL=urls.broker_url,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
    )
    env.update(extra or {})
    return env


def start_worker(
    urls: ServiceUrls,
    *,
    concurrency: int = 0,
    queues: str | None = None,
    pool: str = "prefork",
    loglevel: str = "INFO",
    logfile: Path | None = None,
    extra_env: dict[str, str] | None = None,
    name: str = "tagworker@%h",
) -> subprocess.Popen[bytes]:
    """A `tagworker worker` child process.

    Without `queues` it consumes what `tagworker worker` does by default: the ingest and training queues of the
    settings it runs with (`extra_env` included), so beat's retrain and backfill tasks are taken too, and with
    TAGWORKER_MODEL__DEVICE=cuda the GPU queue.
    """
    args = [sys.executable, "-m", "worker.cli", "worker", "--concurrency", str(concurrency), "--pool", pool]
    args += ["--queues", queues] if queues else []
    args += ["--loglevel", loglevel, "--name", name]
    return _spawn(args, urls, logfile, extra_env)


def start_beat(urls: ServiceUrls, *, schedule: Path, logfile: Path | None = None) -> subprocess.Popen[bytes]:
    """A `tagworker beat` child process."""
    return _spawn([sys.executable, "-m", "worker.cli", "beat", "--schedule", str(schedule)], urls, logfile, None)


def _spawn(
    args: list[str], urls: ServiceUrls, logfile: Path | None, extra_env: dict[str, str] | None
) -> subprocess.Popen[bytes]:
    out = logfile.open("ab") if logfile else None
    try:
        return subprocess.Popen(
            args,
            env=service_env(urls, extra_env),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def stop(process: subprocess.Popen[bytes], *, grace_s: float = 30.0) -> int:
    """SIGTERM (Celery's warm shutdown: finish the batch, hand back the rest), then SIGKILL after the grace."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return int(process.returncode)


# Seconds a pool process waits, when it exits, for the main process to read its last result (billiard: 30).
EXIT_RESULT_WAIT_S = 3.0


def bound_exit_wait(seconds: float = EXIT_RESULT_WAIT_S) -> None:
    """Cap billiard's wait, at a pool process's exit, for its last result to be read.

    On a warm shutdown Celery drops jobs the pool had not acknowledged yet from its books ("the broker
    redelivers them"), but a job already written to the pool process still runs, and nothing reads its result.
    The pool process then waited 30 s before exiting (billiard's `_ensure_messages_consumed`), so the worker
    outlived a 30 s SIGTERM grace (the chaos suite caught the stacks). The batch comes back from the broker
    either way; a lost result of a finished batch is requeued and stored again, idempotently.
    """
    import billiard.pool

    interval = billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL
    billiard.pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = max(1, round(seconds / interval))
