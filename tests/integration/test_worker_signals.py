"""Signals a running worker answers: SIGUSR2 writes its stacks and leaves it running."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.helpers import wait_for
from worker.chaos.faults import dump_stacks

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_sigusr2_writes_every_processs_stacks_to_the_log_and_the_worker_keeps_running(
    worker: subprocess.Popen[bytes], data_dir: Path
) -> None:
    """Registering the handler in a pool process once raised (Celery's stderr proxy has no file descriptor),
    which skipped the rest of the pool process's set-up; the error was only in the log."""
    log = data_dir / "shared-worker.log"
    mark = log.stat().st_size

    dump_stacks(worker, log)

    def dumped() -> bool:
        text = log.read_bytes()[mark:].decode(errors="replace")
        return text.count("== stacks of pid") >= 2 and text.count("most recent call first") >= 2

    wait_for(dumped, timeout_s=10, what="stacks of the main and a pool process in the log")
    assert worker.poll() is None, "SIGUSR2 must not stop the worker"
    assert "Signal handler" not in log.read_text(errors="replace"), "a worker signal handler raised; see the log"
