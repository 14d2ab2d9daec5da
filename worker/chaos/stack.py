"""A throwaway embedded PostgreSQL + Redis and the real worker processes that the faults are injected into."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from worker import embedded
from worker.chaos.poison import hook_dir
from worker.db import get_engine
from worker.migrate import upgrade
from worker.processes import start_worker, stop
from worker.services import ServiceUrls

QUEUE = "chaos"
MAX_TEXT_CHARS = 5000  # lower than production's 100,000, so that oversize fuzz texts stay cheap to send and keep
# Short timings so that redelivery after a kill takes seconds, not the production hour. Four retries from
# 0.15 s (2.25 s of backoff in all) are meant to outlast a fast PostgreSQL restart; settings require the
# visibility timeout to stay above 4 x (flush interval + base x 2^retries) = 10.4 s.
WORKER_ENV = {
    "TAGWORKER_BATCHING__FLUSH_EVERY": "16",
    "TAGWORKER_BATCHING__FLUSH_INTERVAL_S": "0.2",
    "TAGWORKER_BATCHING__DB_RETRIES": "4",
    "TAGWORKER_BATCHING__DB_RETRY_BASE_S": "0.15",
    "TAGWORKER_BROKER__VISIBILITY_TIMEOUT_S": "12",
    "TAGWORKER_TAGGING__CHECK_INTERVAL_S": "0.5",
    "TAGWORKER_INGEST__MAX_TEXT_CHARS": str(MAX_TEXT_CHARS),
}
_BATCH_LINE = re.compile(r"batch \{'received': (\d+)")


def wait_until(condition: Callable[[], bool], *, timeout_s: float, what: str, every_s: float = 0.25) -> None:
    """Poll `condition` (database errors count as not yet) until true; raises TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if condition():
                return
        except DBAPIError:
            pass  # a server being restarted
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(every_s)


@dataclass
class ChaosStack:
    """Embedded servers in a temporary directory, a producer, and the workers started on them."""

    data_dir: Path
    urls: ServiceUrls
    redis_port: int
    engine: Engine
    producer: Celery
    concurrency: int = 0
    logs: list[Path] = field(default_factory=list)
    log_of: dict[int, Path] = field(default_factory=dict)  # worker pid -> its log
    worker: subprocess.Popen[bytes] | None = None
    warmups: int = 0

    @classmethod
    def start(cls, *, concurrency: int = 0) -> ChaosStack:
        # Not under pytest's tmp dir: pytest makes it 0700, which locks out PostgreSQL's own system user.
        data_dir = Path(tempfile.mkdtemp(prefix="tagworker-chaos-"))
        servers = embedded.ensure_running(data_dir)
        urls = ServiceUrls(database_url=servers.database_url, broker_url=servers.broker_url)
        upgrade(urls.database_url)
        producer = Celery(broker=urls.broker_url)
        producer.conf.task_serializer = "json"
        return cls(data_dir, urls, servers.redis_port, get_engine(urls.database_url), producer, concurrency)

    def close(self, *, keep: bool = False) -> None:
        """Stop the worker and both servers; delete the data dir unless `keep` (its logs explain a failure)."""
        if self.worker is not None:
            stop(self.worker, grace_s=20)
        self.engine.dispose()
        embedded.stop(self.data_dir)
        if not keep:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def worker_env(self, **extra: str) -> dict[str, str]:
        hooks = str(hook_dir(self.data_dir))
        path = os.pathsep.join(p for p in (hooks, os.environ.get("PYTHONPATH")) if p)
        return {**WORKER_ENV, "TAGWORKER_DATA_DIR": str(self.data_dir), "PYTHONPATH": path, **extra}

    def launch(self, name: str, *, queues: str = QUEUE, urls: ServiceUrls | None = None, **env: str):  # type: ignore[no-untyped-def]
        """Start a worker process (with the poison hook, see `poison.py`); its log is kept for `batch_receipts`."""
        log = self.data_dir / f"{name}-{len(self.logs)}.log"
        self.logs.append(log)
        process = start_worker(
            urls or self.urls, concurrency=self.concurrency, queues=queues, logfile=log,
            extra_env=self.worker_env(**env), name=f"{name}-{len(self.logs)}@%h",
        )  # fmt: skip
        self.log_of[process.pid] = log
        return process

    def ensure_worker(self, *, timeout_s: float = 240) -> subprocess.Popen[bytes]:
        """The current worker, started (and waited for until it stores an event) if there is none alive."""
        if self.worker is None or self.worker.poll() is not None:
            self.worker = self.launch("chaos-worker")
            self.wait_ready(self.worker, timeout_s=timeout_s)
        return self.worker

    def replace_worker(self) -> subprocess.Popen[bytes]:
        """Start a new current worker without waiting: mid-stream, a warm-up event would queue behind the backlog."""
        self.worker = self.launch("chaos-worker")
        return self.worker

    def wait_ready(
        self, worker: subprocess.Popen[bytes], *, producer: Celery | None = None, timeout_s: float = 240
    ) -> None:
        """Until the worker has loaded its model and stored a warm-up event."""
        from worker.chaos.ledger import feedback_event

        warmup = feedback_event("warm-up: is the chaos worker ready?")
        (producer or self.producer).send_task("tagworker.ingest", args=[warmup], queue=QUEUE)
        self.warmups += 1

        def stored() -> bool:
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited with {worker.returncode} during start-up; see {self.logs[-1]}")
            with self.engine.connect() as conn:
                found = conn.execute(text("SELECT 1 FROM items WHERE event_id = :e"), {"e": warmup["event_id"]})
                return found.first() is not None

        wait_until(stored, timeout_s=timeout_s, what="a worker to store its warm-up event")

    def log_marks(self) -> dict[Path, int]:
        """Where each worker log ends now; `batch_receipts(since=...)` reads only what comes after."""
        return {log: log.stat().st_size for log in self.logs if log.exists()}

    def log_text(self, *, since: dict[Path, int]) -> str:
        """What the workers logged after the marks (whole logs of workers started since)."""
        parts = []
        for log in self.logs:
            if log.exists():
                with log.open("rb") as handle:
                    handle.seek(since.get(log, 0))
                    parts.append(handle.read().decode("utf-8", "replace"))
        return "\n".join(parts)

    def batch_receipts(self, *, since: dict[Path, int]) -> int:
        """Messages received by batches that completed (one `batch {...}` log line each) since the marks."""
        return sum(int(n) for n in _BATCH_LINE.findall(self.log_text(since=since)))

    def queue_length(self, queue: str) -> int:
        import redis

        client = redis.Redis.from_url(self.urls.broker_url)
        try:
            return int(client.llen(queue))
        finally:
            client.close()
