"""Commands that move or show data: publish, status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from tqdm import tqdm

from worker.cli.common import backfill_text, clean_errors, console, failed_items_hint, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import ConfigurationError
from worker.publish import read_jsonl, send_events, to_event
from worker.queues import queue_depth
from worker.services import redact
from worker.store.status import pipeline_counts


def publish(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON Lines, one event per line.")],
    kind: Annotated[str | None, typer.Option(help="content or feedback, for lines without a `kind`.")] = None,
) -> None:
    """Send every line of FILE to the ingest queue (stable event ids: sending twice stores once)."""
    with clean_errors():
        if kind not in (None, "content", "feedback"):
            raise ConfigurationError(f"--kind {kind!r}: use content or feedback")
        settings, _ = settings_and_urls(start_embedded=True)
        from worker.celery_app import app

        with file.open(encoding="utf-8", errors="surrogateescape") as handle:
            total = sum(1 for line in handle if line.strip())
            handle.seek(0)
            events = (to_event(record, kind) for record in read_jsonl(handle))
            sent = sum(
                1
                for _ in tqdm(
                    send_events(app, events, queue=settings.broker.ingest_queue),
                    total=total,
                    desc="publishing",
                    unit="event",
                )
            )
        console.print(f"sent {sent} events to queue {settings.broker.ingest_queue!r}")


def convert(
    dataset: Annotated[str, typer.Argument(help="banking77, dstc11, goemotions or appstore.")],
    out: Annotated[Path, typer.Option(help="Directory for the .jsonl files.")] = Path("eval-data"),
    source: Annotated[Path, typer.Option(help="The shared datasets directory.")] = Path("../shared/data"),
) -> None:
    """Write `{"text", "tags"}` lines for `tagworker eval` (one file per split, or per domain for DSTC11)."""
    from worker.data_convert import convert as run_convert

    with clean_errors():
        for name, lines in run_convert(dataset, source, out).items():
            console.print(f"{out / name}: {lines} lines")


def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Items by kind, embedded, rejected, queue depth and active model."""
    with clean_errors():
        settings, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            counts: dict[str, Any] = pipeline_counts(session)
        counts["queue"] = queue_depth(urls.broker_url, settings.broker.ingest_queue)
        counts["database"] = redact(urls.database_url)
        counts["broker"] = redact(urls.broker_url)
        if as_json:
            typer.echo(json.dumps(counts, indent=2))
            return
        table = Table(title="tagworker status", show_header=False)
        table.add_row("content items", str(counts["items"]["content"]))
        table.add_row("feedback items", str(counts["items"]["feedback"]))
        table.add_row("embedded (active model)", str(counts["embedded"]))
        rejected = counts["rejected"]
        waiting = (
            f" ({rejected['waiting_for_item']} corrections wait for their item)" if rejected["waiting_for_item"] else ""
        )
        table.add_row("rejected: invalid / failed", f"{rejected['invalid']} / {rejected['failed']}{waiting}")
        table.add_row("tag corrections", str(counts["tag_corrections"]))
        table.add_row("queue: waiting / unacked", f"{counts['queue']['waiting']} / {counts['queue']['unacked']}")
        table.add_row("active model", str(counts["active_model"]))
        if fill := counts["backfill"]:
            table.add_row("backfill (re-embedding)", backfill_text(fill))
            if hint := failed_items_hint(fill):
                table.add_row("backfill: failed items", hint)
        if counts["training"]:
            table.add_row("training", str(counts["training"]))
        table.add_row("database", counts["database"])
        table.add_row("broker", counts["broker"])
        console.print(table)


def register(app: typer.Typer) -> None:
    app.command()(publish)
    app.command()(status)
    data_app = typer.Typer(help="Prepare labelled datasets for `tagworker eval`.", no_args_is_help=True)
    data_app.command()(convert)
    app.add_typer(data_app, name="data")
