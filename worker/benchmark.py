"""Pipeline throughput against stock sentence-transformers `encode`, measured in the same run.

The ratio, not the absolute rate, is the result: this machine is noisy, so the stock encode runs (warm) before
and after the pipeline and the ratio uses their mean. `cpu_ms_per_text` splits the pipeline's CPU between the
worker's main process, its pool processes, PostgreSQL and Redis, which all share the cores stock encode has alone.
"""

from __future__ import annotations

import gc
import shutil
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from celery import Celery
from sqlalchemy import Engine, text

from worker import embedded
from worker.db import get_engine
from worker.errors import ConfigurationError
from worker.jsonl import csv_rows, json_lines
from worker.migrate import upgrade
from worker.pipeline.embed import load_embedder, pick_device, resolve_model_path
from worker.processes import start_worker, stop
from worker.publish import TASK_NAME
from worker.services import ServiceUrls
from worker.settings import Settings

SHARED_BANKING77 = Path(__file__).resolve().parents[2] / "shared" / "data" / "banking77" / "train.csv"
BUNDLED_SAMPLE = Path(__file__).resolve().parents[1] / "samples" / "feedback.jsonl"
Progress = Callable[[str, int, int], None]


def load_texts(path: Path | None, n: int) -> tuple[list[str], str]:
    """Up to `n` texts from a CSV or JSON Lines file with a `text` field (cycled if the file is shorter).

    A file that cannot be read, a line that is not JSON and a row without a text are errors naming the file and line.
    """
    source = path or (SHARED_BANKING77 if SHARED_BANKING77.exists() else BUNDLED_SAMPLE)
    try:
        rows = csv_rows(source, required="text") if source.suffix == ".csv" else _jsonl_texts(source)
        texts = [row["text"] for _, row in rows]
    except OSError as exc:
        raise ConfigurationError(f"cannot read {source}: {exc.strerror or exc}") from None
    if not texts:
        raise ConfigurationError(f"{source} has no texts")
    return [texts[i % len(texts)] for i in range(n)], str(source)


def _jsonl_texts(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    expected = 'a JSON object with a "text" string'
    for number, row in json_lines(path, expected):
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise ConfigurationError(f"{path}:{number}: expected {expected}")
        yield number, row


def raw_encode_rate(settings: Settings, texts: list[str]) -> float:
    """Texts per second of stock `SentenceTransformer.encode` (its defaults) on the same model and device."""
    from sentence_transformers import SentenceTransformer

    device = pick_device(settings.model.device)
    model = SentenceTransformer(resolve_model_path(settings.model.name_or_path), device=device)
    if device == "cuda":
        model.half()
    # Warm up on every text: torch builds kernels per input shape, and a cold first pass ran up to 25% slower
    # than a second one, which flattered the pipeline.
    model.encode(texts, normalize_embeddings=True)
    started = time.perf_counter()
    model.encode(texts, normalize_embeddings=True)
    rate = len(texts) / (time.perf_counter() - started)
    del model
    gc.collect()
    return rate


def cpu_seconds(worker_pid: int) -> dict[str, float]:
    """CPU seconds so far of the worker's main process, its pool processes, PostgreSQL and Redis."""
    totals = {"worker_main": 0.0, "worker_pool": 0.0, "postgres": 0.0, "redis": 0.0}
    try:
        root = psutil.Process(worker_pid)
        times = root.cpu_times()
        totals["worker_main"] = times.user + times.system
        for child in root.children(recursive=True):
            times = child.cpu_times()
            totals["worker_pool"] += times.user + times.system
    except psutil.Error:
        pass
    for process in psutil.process_iter(["name"]):
        name = process.info["name"] or ""
        group = "postgres" if name.startswith("postgres") else "redis" if name.startswith("redis-server") else None
        if group:
            try:
                times = process.cpu_times()
                totals[group] += times.user + times.system
            except psutil.Error:
                continue
    return totals


class RssSampler(threading.Thread):
    """Peak resident memory of a process and its children, sampled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_bytes, self._halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.2):
            try:
                root = psutil.Process(self.pid)
                total = sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
            except psutil.Error:
                continue
            self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return self.peak_bytes / 2**20


def _events(texts: list[str], run_id: str) -> list[dict[str, Any]]:
    return [
        {
            "kind": "feedback.received",
            "event_id": str(uuid.uuid4()),
            "feedback_id": f"bench-{run_id}-{i}",
            "occurred_at": datetime.now(UTC).isoformat(),
            "text": t,
        }
        for i, t in enumerate(texts)
    ]


def _stored(engine: Engine, prefix: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM items WHERE kind = 'feedback' AND external_id LIKE :p"), {"p": f"{prefix}%"}
            ).scalar_one()
        )


def _send(app: Celery, events: list[dict[str, Any]], queue: str, pace_s: float = 0.0) -> None:
    with app.producer_or_acquire() as producer:
        for event in events:
            if pace_s:
                event["occurred_at"] = datetime.now(UTC).isoformat()
            app.send_task(TASK_NAME, args=[event], queue=queue, producer=producer)
            if pace_s:
                time.sleep(pace_s)


def _wait_stored(engine: Engine, prefix: str, total: int, progress: Progress, stage: str) -> None:
    while (done := _stored(engine, prefix)) < total:
        progress(stage, done, total)
        time.sleep(0.1)
    progress(stage, total, total)


def run_throughput(
    app: Celery, engine: Engine, texts: list[str], progress: Progress, worker_pid: int
) -> tuple[float, dict[str, float]]:
    """Texts/s from Redis to PostgreSQL: the queue is filled first, then the worker is told to consume it.

    Publishing is left out of the clock on purpose: producers run in other services, and on a 2-core box a
    publisher in this process would take CPU from the worker being measured.
    """
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench-{run_id}"
    events = _events(texts, run_id)
    progress("filling queue", 0, 1)
    _send(app, events, queue)
    progress("filling queue", 1, 1)
    cpu_before = cpu_seconds(worker_pid)
    started = time.perf_counter()
    app.control.add_consumer(queue, reply=True, timeout=10)
    _wait_stored(engine, f"bench-{run_id}-", len(events), progress, "pipeline")
    elapsed = time.perf_counter() - started
    cpu_after = cpu_seconds(worker_pid)
    app.control.cancel_consumer(queue, reply=True, timeout=10)
    per_text = {k: round(1000 * (cpu_after[k] - cpu_before[k]) / len(events), 2) for k in cpu_before}
    return len(events) / elapsed, per_text


def run_latency(
    app: Celery, engine: Engine, texts: list[str], queue: str, rate_per_s: float, progress: Progress
) -> list[float]:
    """Milliseconds from `occurred_at` (set when sent) to the row's commit, at a steady `rate_per_s`."""
    run_id = uuid.uuid4().hex[:8]
    events = _events(texts, run_id)
    sender = threading.Thread(target=_send, args=(app, events, queue, 1.0 / rate_per_s))
    sender.start()
    _wait_stored(engine, f"bench-{run_id}-", len(events), progress, "latency")
    sender.join()
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT extract(epoch FROM received_at - occurred_at) * 1000 FROM items "
                "WHERE kind = 'feedback' AND external_id LIKE :p"
            ),
            {"p": f"bench-{run_id}-%"},
        )
        return [float(x) for x in rows.scalars()]


def percentile(values: list[float], q: float) -> float:
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]) if len(values) > 1 else 0.0


def bench(settings: Settings, texts: list[str], source: str, progress: Progress) -> dict[str, Any]:
    """Run the benchmark on a fresh embedded stack in a temporary directory; returns the JSON result."""
    data_dir = Path(tempfile.mkdtemp(prefix="tagworker-bench-"))
    servers = embedded.ensure_running(data_dir)
    urls = ServiceUrls(database_url=servers.database_url, broker_url=servers.broker_url)
    worker = None
    try:
        upgrade(urls.database_url)
        engine = get_engine(urls.database_url)
        app = Celery(broker=urls.broker_url)
        # The ONNX export exists before the worker starts, as after any restart in production: its pool
        # processes load it from files (no torch), which is what the memory and throughput should describe.
        progress("export the model", 0, 1)
        load_embedder(settings.model, cache_dir=data_dir / "onnx")
        queue = settings.broker.ingest_queue
        worker = start_worker(
            urls, queues=queue, logfile=data_dir / "worker.log", extra_env={"TAGWORKER_DATA_DIR": str(data_dir)}
        )
        sampler = RssSampler(worker.pid)
        sampler.start()
        run_latency(app, engine, texts[:64], queue, 50.0, progress)  # every pool process loads its model
        progress("stock encode (before)", 0, 1)
        before = raw_encode_rate(settings, texts)
        piped, cpu_ms = run_throughput(app, engine, texts, progress, worker.pid)
        progress("stock encode (after)", 0, 1)
        after = raw_encode_rate(settings, texts)
        raw = (before + after) / 2
        n_paced = min(300, max(30, len(texts) // 10))
        latencies = run_latency(app, engine, texts[:n_paced], queue, raw / 2, progress)
        return {
            "n": len(texts),
            "data": source,
            "model": settings.model.name_or_path,
            "device": pick_device(settings.model.device),
            "flush_every": settings.batching.flush_every,
            "flush_interval_s": settings.batching.flush_interval_s,
            "raw_texts_per_s": round(raw, 1),
            "raw_texts_per_s_before_after": [round(before, 1), round(after, 1)],
            "pipeline_texts_per_s": round(piped, 1),
            "ratio": round(piped / raw, 3),
            "p50_ms": round(percentile(latencies, 50), 1),
            "p95_ms": round(percentile(latencies, 95), 1),
            "latency_events": n_paced,
            "latency_rate_per_s": round(raw / 2, 1),
            "peak_worker_rss_mb": round(sampler.stop(), 1),
            "cpu_ms_per_text": cpu_ms,
        }
    finally:
        if worker is not None:
            stop(worker)
        embedded.stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
