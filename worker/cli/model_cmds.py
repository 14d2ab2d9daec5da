"""`tagworker model ...`, `tagworker retrain` and `tagworker train pairs add`: the retraining loop by hand."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from worker.cli.common import backfill_text, clean_errors, console, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import ModelVersionError

model_app = typer.Typer(help="Model versions: list, promote, roll back.", no_args_is_help=True)
train_app = typer.Typer(help="Training data beyond tag corrections.", no_args_is_help=True)
pairs_app = typer.Typer(help="Vocabulary pairs: two phrases and how alike they are (0..1).", no_args_is_help=True)
train_app.add_typer(pairs_app, name="pairs")


def _row(version: Any) -> dict[str, Any]:
    metrics = version.metrics or {}
    before, after = metrics.get("before", {}), metrics.get("after", {})
    return {
        "id": version.id, "name": version.name, "status": version.status, "parent_id": version.parent_id,
        "accuracy": [before.get("accuracy"), after.get("accuracy")],
        "ndcg10": [before.get("ndcg10"), after.get("ndcg10")],
        "seconds": version.seconds, "created_at": version.created_at.isoformat(),
        "activated_at": version.activated_at.isoformat() if version.activated_at else None,
        "backfill": version.backfill or {}, "reason": version.reason, "path": version.path,
    }  # fmt: skip


def _change(before_after: list[Any]) -> str:
    return "" if before_after[1] is None else f"{before_after[0]} -> {before_after[1]}"


@model_app.command("list")
def list_models(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Every version: stock, candidates (promoted, rejected, failed), with the gate's before/after metrics."""
    from worker.store.model_versions import list_versions
    from worker.store.status import backfill_summary

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            rows = [_row(v) for v in list_versions(session)]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="Model versions")
        for column in ("id", "name", "status", "from", "accuracy", "nDCG@10", "backfill", "reason"):
            table.add_column(column, overflow="fold")
        for r in rows:
            fill = backfill_text(backfill_summary(r["backfill"]), active=r["status"] == "active")
            table.add_row(str(r["id"]), r["name"], r["status"], str(r["parent_id"] or ""), _change(r["accuracy"]),
                          _change(r["ndcg10"]), fill, (r["reason"] or "")[:120])  # fmt: skip
        console.print(table)
        if any(r["backfill"].get("failed") for r in rows):
            console.print("failed: items the version's model raised on; they stay without a vector under it "
                          "(`tagworker status` lists the active version's)")  # fmt: skip


@model_app.command("promote")
def promote(
    version: Annotated[str, typer.Argument(help="Version id or name (`tagworker model list`), or a model directory.")],
) -> None:
    """Make VERSION active after checking its directory loads; workers switch at their next batch."""
    from worker.store.model_versions import find_version

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        engine = get_engine(urls.database_url)
        if Path(version).expanduser().is_dir():
            version = _register_directory(engine, Path(version).expanduser().resolve())
        with session_scope(engine) as session:
            target = find_version(session, version)
        _switch_to(urls.database_url, target)


def _register_directory(engine: Any, directory: Path) -> str:
    """A model directory becomes a candidate version (once); returns its name."""
    from worker.model_store import verify_model_dir
    from worker.pipeline.embed import version_name_for
    from worker.store.model_versions import register_model_version

    dims = verify_model_dir(directory)
    name = version_name_for(str(directory), str(directory))
    with engine.begin() as connection:
        # No index here: `_switch_to` builds it CONCURRENTLY, without holding back ingest.
        register_model_version(connection, name=name, base_model=str(directory), path=str(directory), dims=dims)
    return name


@model_app.command("rollback")
def rollback() -> None:
    """Go back to the version that was active before the current one."""
    from worker.store.model_versions import previous_active

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            target = previous_active(session)
        if target is None:
            raise ModelVersionError("no earlier active version to roll back to")
        _switch_to(urls.database_url, target)


def _switch_to(database_url: str, target: Any) -> None:
    from worker.model_store import verify_model_dir
    from worker.store.model_versions import activate, build_hnsw_index

    if target.status == "active":
        raise ModelVersionError(f"version {target.name} is already active")
    if target.status in {"training", "failed"} or not target.path:
        raise ModelVersionError(f"version {target.name} is {target.status} and has no usable model directory")
    verify_model_dir(target.path, dims=target.dims)
    build_hnsw_index(get_engine(database_url), target.id, target.dims)  # outside the switch: ingest writes on
    with session_scope(get_engine(database_url)) as session:
        activate(session, target.id)
        session.commit()
    console.print(f"version {target.id} ({target.name}) is active; workers switch at their next batch")
    _enqueue_backfill()


def _enqueue_backfill() -> None:
    try:
        from worker.celery_app import app

        app.send_task("tagworker.backfill")
        console.print("backfill queued: stored items are re-embedded under it (`tagworker status` shows progress)")
    except Exception as exc:  # beat starts it within TAGWORKER_TRAINING__BACKFILL_INTERVAL_S anyway
        console.print(f"[yellow]could not queue the backfill ({exc}); beat will start it[/yellow]")


def retrain(force: Annotated[bool, typer.Option(help="Retrain even without enough new labels.")] = False) -> None:
    """Fine-tune on human labels now, gate the candidate, promote it if it wins; prints the summary as JSON."""
    from worker.retraining import RetrainService

    with clean_errors():
        settings, urls = settings_and_urls(start_embedded=False)
        engine = get_engine(urls.database_url)
        with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout is for the JSON
            summary = RetrainService(engine=engine, settings=settings).run(force=force, show_progress=True)
        typer.echo(json.dumps(summary.as_dict(), indent=2))
        if summary.status == "promoted":
            _enqueue_backfill()
        if summary.status == "failed":
            raise typer.Exit(1)


@pairs_app.command("add")
def add_pairs(
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help='Lines {"a": str, "b": str, "score": 0..1}.')
    ],
) -> None:
    """Store vocabulary pairs for the next retraining; a pair already stored, or given twice, keeps the last score."""
    from worker.pipeline.training_pairs import read_scored_pairs
    from worker.store.training import add_pairs as store_pairs

    with clean_errors():
        pairs = read_scored_pairs(file)
        _, urls = settings_and_urls(start_embedded=True)
        with session_scope(get_engine(urls.database_url)) as session:
            written = store_pairs(session, pairs, source=file.name)
            session.commit()
        console.print(f"stored {written} vocabulary pairs from {file}")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")
    app.add_typer(train_app, name="train")
    app.command()(retrain)
