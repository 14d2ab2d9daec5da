"""Fault injectors: kill or stop a worker, restart Redis or PostgreSQL under it, a pickle that must never load."""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import subprocess
import time
from pathlib import Path

import psutil

from worker import embedded
from worker.chaos.stack import ChaosStack
from worker.processes import STACKS_SIGNAL


def kill_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its pool processes at once, as a lost host or the OOM killer would."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def terminate_worker(process: subprocess.Popen[bytes], *, grace_s: float, log: Path | None = None) -> float | None:
    """SIGTERM (a deploy): seconds until the worker exited, or None if it outlived the grace.

    A worker that outlives it is asked for its threads' stacks (into `log`, see `dump_stacks`) before the
    SIGKILL, so the log says what it was waiting on.
    """
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        dump_stacks(process, log)
        kill_worker(process)
        return None
    return round(time.monotonic() - started, 2)


def dump_stacks(process: subprocess.Popen[bytes], log: Path | None) -> None:
    """Ask the worker's processes, the main one first and one at a time (so their dumps do not interleave), to
    write every thread's stack to the worker's log, each under a line naming its pid."""
    try:
        pids = [process.pid] + [child.pid for child in psutil.Process(process.pid).children(recursive=True)]
    except psutil.Error:
        pids = [process.pid]
    for pid in pids:
        if log is not None:
            with log.open("a") as out:
                out.write(f"\n== stacks of pid {pid} ({'main' if pid == process.pid else 'pool'} process) ==\n")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, STACKS_SIGNAL)
            time.sleep(0.5)


def restart_redis(stack: ChaosStack, *, down_s: float = 1.0) -> None:
    """Shut Redis down (its AOF is written first) and start it again on the same port with the same data."""
    embedded.stop_redis(stack.redis_port)
    time.sleep(down_s)
    embedded.start_redis(stack.data_dir / "redis", stack.redis_port)


def restart_postgres(stack: ChaosStack, *, down_s: float = 0.5) -> None:
    """A fast shutdown (open sessions end, transactions in progress roll back), then start again."""
    embedded.stop_postgres(stack.data_dir)
    time.sleep(down_s)
    embedded.start_postgres(stack.data_dir)
    stack.engine.dispose()


class PickleBomb:
    """Unpickling this creates `marker`: if the file ever exists, some process loaded a pickle it was sent."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.touch, (self.marker,))


def pickle_task_body(marker: Path) -> bytes:
    """A Celery protocol-2 body, (args, kwargs, embed), whose only argument is a `PickleBomb`."""
    return pickle.dumps(([PickleBomb(marker)], {}, {"callbacks": None, "errbacks": None, "chain": None}))
