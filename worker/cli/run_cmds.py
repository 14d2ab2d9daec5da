"""Commands that run things: up, down, migrate, worker, beat, demo."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from worker import embedded
from worker.cli.common import clean_errors, console, settings_and_urls
from worker.errors import ConfigurationError
from worker.migrate import upgrade, upgrade_when_up
from worker.processes import start_beat, start_worker, stop, usable_cores
from worker.settings import get_settings


def _raise_interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def up(
    concurrency: Annotated[int, typer.Option(min=0, help="Worker pool processes; 0 = one per CPU core.")] = 0,
) -> None:
    """Start the embedded PostgreSQL and Redis (unless URLs are set), migrate, run worker and beat until Ctrl-C."""
    with clean_errors():
        settings, urls = settings_and_urls(start_embedded=True)
        upgrade(urls.database_url)
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker = start_worker(urls, concurrency=concurrency, logfile=logs / "worker.log")
        beat = start_beat(urls, schedule=settings.data_dir / "celerybeat-schedule", logfile=logs / "beat.log")
        console.print(f"tagworker is up: worker pid {worker.pid}, beat pid {beat.pid}; logs in {logs}. Ctrl-C stops.")
        signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            while worker.poll() is None and beat.poll() is None:
                time.sleep(0.5)
            console.print(f"[red]a process exited (worker {worker.returncode}, beat {beat.returncode}); stopping[/red]")
        except KeyboardInterrupt:
            console.print("stopping: worker finishes its batch, unfinished messages go back to Redis")
        finally:
            codes = stop(worker), stop(beat, grace_s=10)
            if settings.embedded:
                embedded.stop(settings.data_dir)
            console.print(f"stopped (worker exit {codes[0]}, beat exit {codes[1]})")


def down() -> None:
    """Stop the embedded servers of this data dir (their data stays)."""
    with clean_errors():
        settings = get_settings()
    embedded.stop(settings.data_dir)
    console.print(f"embedded servers in {settings.data_dir} stopped")


def migrate() -> None:
    """Wait for the database, then bring its schema to the latest Alembic revision."""
    with clean_errors():
        _, urls = settings_and_urls(start_embedded=True)
        upgrade_when_up(urls.database_url, wait_s=60)
        console.print("database schema is up to date")


def worker(
    queues: Annotated[
        str | None,
        typer.Option(help="Comma-separated queues (default: ingest and training; with DEVICE=cuda also gpu)."),
    ] = None,
    pool: Annotated[str, typer.Option(help="prefork for CPU; solo for a GPU (CUDA is not fork-safe).")] = "prefork",
    concurrency: Annotated[int, typer.Option(min=0, help="Pool processes (prefork); 0 = one per CPU core.")] = 0,
    loglevel: Annotated[str, typer.Option()] = "INFO",
    name: Annotated[str, typer.Option(help="Celery node name.")] = "tagworker@%h",
) -> None:
    """Run a Celery worker (model loaded lazily in each pool process, never in the parent)."""
    from worker.runtime import check_model_config

    with clean_errors():
        if pool not in {"prefork", "solo", "threads"}:
            raise ConfigurationError(f"--pool {pool!r}: use prefork (CPU) or solo (GPU)")
        concurrency = pool_size(pool, concurrency)
        settings = get_settings()
        queues = queues or settings.broker.queues_for(gpu=settings.model.device == "cuda")
        check_model_config(get_settings())
        from worker.celery_app import app

        app.worker_main(["worker", "-Q", queues, "--pool", pool, "-c", str(concurrency), "-l", loglevel, "-n", name])


def pool_size(pool: str, requested: int) -> int:
    """Processes for the pool: one per core on CPU, where single-threaded torch per process scales best."""
    if pool == "solo":
        return 1
    return requested or usable_cores()


def beat(
    schedule: Annotated[Path, typer.Option(help="Where beat keeps its schedule state.")] = Path("celerybeat-schedule"),
) -> None:
    """Run Celery beat (exactly one per deployment)."""
    with clean_errors():
        from worker.celery_app import app

        settings = get_settings()
        if schedule == Path("celerybeat-schedule"):
            schedule = settings.data_dir / "celerybeat-schedule"
        schedule.parent.mkdir(parents=True, exist_ok=True)
        app.start(["beat", "-s", str(schedule), "-l", "INFO"])


def register(app: typer.Typer) -> None:
    from worker.cli.demo_cmd import demo

    for command in (up, down, migrate, worker, beat, demo):
        app.command()(command)
