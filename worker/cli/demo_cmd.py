"""`tagworker demo`: the whole pipeline on the bundled sample, start to finish, in one command."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import text
from tqdm import tqdm

from worker import embedded
from worker.cli.common import clean_errors, console, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import ConfigurationError, ServiceUnavailableError
from worker.migrate import upgrade
from worker.processes import start_worker, stop
from worker.publish import read_jsonl, send_events, to_event
from worker.queues import queue_depth
from worker.settings import Settings, get_settings

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
SAMPLE_FILES = (("content.jsonl", "content"), ("feedback.jsonl", "feedback"), ("invalid.jsonl", None))


def demo(timeout_s: Annotated[int, typer.Option(help="Give up after this many seconds.")] = 900) -> None:
    """Start the stack, publish the bundled sample, wait until all of it is processed, show the result, stop."""
    with clean_errors():
        if not SAMPLES.is_dir():
            raise ConfigurationError(f"sample folder {SAMPLES} not found; run the demo from a clone of the repo")
        settings = get_settings()
        was_running = embedded.running(settings.data_dir) is not None
        _, urls = settings_and_urls(start_embedded=True)
        upgrade(urls.database_url)
        logs = settings.data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        worker = start_worker(urls, logfile=logs / "demo-worker.log")
        try:
            sent = _publish_samples(settings.broker.ingest_queue)
            _wait_until_processed(
                urls.database_url, urls.broker_url, settings.broker.ingest_queue, sent, timeout_s, worker
            )
            _show_results(urls.database_url)
            _cluster_and_map(urls.database_url, settings)
        finally:
            stop(worker)
            if settings.embedded and not was_running:
                embedded.stop(settings.data_dir)


def _cluster_and_map(database_url: str, settings: Settings) -> None:
    """Run one clustering of the sample feedback (beat would do it hourly) and draw the map."""
    from worker.cluster_map import draw_map
    from worker.clustering import ClusteringService
    from worker.store.search import active_version

    engine = get_engine(database_url)
    with session_scope(engine) as session:
        found = active_version(session)
    if found is None:
        return
    with console.status("clustering the feedback"):
        summary = ClusteringService(engine=engine, model_version_id=found[0], settings=settings.clustering).run()
    if summary.status != "succeeded":
        console.print(f"clustering {summary.status}: {summary.message}")
        return
    with session_scope(engine) as session:
        themes = session.execute(
            text("SELECT cluster_id, label, items, (SELECT left(text, 80) FROM items WHERE id = "
                 "representative_item_ids[1]) FROM dashboard.clusters ORDER BY items DESC")
        ).all()  # fmt: skip
        out = settings.data_dir / "feedback-map.png"
        draw_map(session, model_version_id=found[0], out=out)
    table = Table(
        title=f"feedback themes (HDBSCAN, {summary.seconds:.1f}s; noise {100 * (summary.noise_share or 0):.0f}%)"
    )
    for column in ("theme", "label (c-TF-IDF keywords)", "items", "most typical message"):
        table.add_column(column, overflow="fold")
    for row in themes:
        table.add_row(str(row[0]), row[1], str(row[2]), row[3] or "")
    console.print(table)
    console.print(f"map of the themes: {out}")


def _publish_samples(queue: str) -> dict[str, str | None]:
    """Send the sample files; returns message id -> event id (None where the line has no usable id)."""
    from worker.celery_app import app

    sent: dict[str, str | None] = {}
    for name, kind in SAMPLE_FILES:
        with (SAMPLES / name).open(encoding="utf-8") as handle:
            events = [to_event(record, kind) for record in read_jsonl(handle)]
        ids = list(tqdm(send_events(app, events, queue=queue), total=len(events), desc=f"publishing {name}"))
        for message_id, event in zip(ids, events, strict=True):
            sent[message_id] = event.get("event_id") if isinstance(event, dict) else None
    return sent


def _wait_until_processed(
    database_url: str,
    broker_url: str,
    queue: str,
    sent: dict[str, str | None],
    timeout_s: int,
    worker: subprocess.Popen[bytes],
) -> None:
    """Until every sent message is a stored item or a rejected event and the queue is empty."""
    engine = get_engine(database_url)
    event_ids = [e for e in sent.values() if e]
    deadline = time.monotonic() + timeout_s
    with tqdm(total=len(sent), desc="processing", unit="event") as bar:
        while True:
            with session_scope(engine) as session:
                stored = session.execute(
                    text("SELECT count(*) FROM items WHERE event_id::text = ANY(:ids)"), {"ids": event_ids}
                ).scalar_one()
                rejected = session.execute(
                    text("SELECT count(*) FROM rejected_events WHERE message_id = ANY(:ids)"), {"ids": list(sent)}
                ).scalar_one()
            bar.n = min(stored + rejected, len(sent))
            bar.refresh()
            depth = queue_depth(broker_url, queue)
            if stored + rejected >= len(sent) and depth["waiting"] == 0 and depth["unacked"] == 0:
                return
            if worker.poll() is not None:
                raise ServiceUnavailableError("the worker exited; see .tagworker/logs/demo-worker.log")
            if time.monotonic() > deadline:
                raise ServiceUnavailableError(f"not all events processed after {timeout_s}s")
            time.sleep(0.5)


def _show_results(database_url: str) -> None:
    with session_scope(get_engine(database_url)) as session:
        kinds = session.execute(
            text(
                "SELECT i.kind, count(*), count(e.item_id), count(*) FILTER (WHERE e.chunks_total > 1) "
                "FROM items i LEFT JOIN embeddings e ON e.item_id = i.id GROUP BY i.kind ORDER BY i.kind"
            )
        ).all()
        rejected = session.execute(
            text("SELECT status, reason FROM rejected_events ORDER BY last_seen_at DESC LIMIT 10")
        ).all()
        neighbours = session.execute(text(_NEIGHBOURS_SQL)).all()
        tagged = session.execute(text(_TAGGED_SQL)).all()
    table = Table(title="stored items")
    for column in ("kind", "items", "embedded", "long texts (chunked)"):
        table.add_column(column)
    for row in kinds:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    table = Table(title="rejected events (kept with their reason, never dropped)")
    table.add_column("status")
    table.add_column("reason")
    for status, reason in rejected:
        table.add_row(status, reason)
    console.print(table)
    table = Table(title="tags the worker gave (zero-shot from the default taxonomy until people correct some)")
    for column in ("item", "text", "tags (score)"):
        table.add_column(column, overflow="fold")
    for ref, body, tags in tagged:
        table.add_row(ref, body[:70], tags or "(abstained)")
    console.print(table)
    table = Table(title="nearest feedback by embedding (cosine)")
    for column in ("feedback", "most similar other feedback", "similarity"):
        table.add_column(column, overflow="fold")
    for a, b, score in neighbours:
        table.add_row(a[:70], b[:70], f"{score:.2f}")
    console.print(table)


_TAGGED_SQL = """
SELECT i.kind || '/' || i.external_id, coalesce(i.title, i.text),
       (SELECT string_agg(g.name || ' ' || round(it.score::numeric, 2), ', ' ORDER BY it.score DESC)
        FROM item_tags it JOIN tags g ON g.id = it.tag_id WHERE it.item_id = i.id)
FROM items i
WHERE i.external_id IN ('blog-001', 'blog-003', 'ad-004', 'fb-0003', 'fb-0030', 'fb-0045', 'fb-0060', 'fb-0074')
ORDER BY i.kind, i.external_id
"""

_NEIGHBOURS_SQL = """
WITH picked AS (
    SELECT i.id, i.text, e.vector, e.model_version_id FROM items i JOIN embeddings e ON e.item_id = i.id
    WHERE i.kind = 'feedback' AND i.external_id IN ('fb-0003', 'fb-0030', 'fb-0045', 'fb-0074')
)
SELECT p.text, n.text, n.similarity FROM picked p
CROSS JOIN LATERAL (
    SELECT j.text, 1 - (f.vector <=> p.vector) AS similarity
    FROM embeddings f JOIN items j ON j.id = f.item_id
    WHERE f.model_version_id = p.model_version_id AND j.kind = 'feedback' AND j.id <> p.id
    ORDER BY f.vector <=> p.vector LIMIT 1
) n
"""
