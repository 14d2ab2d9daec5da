"""`tagworker bench`: pipeline throughput against stock encode, in the same run; prints JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from worker.cli.common import clean_errors, console
from worker.settings import get_settings


def bench(
    n: Annotated[int, typer.Option(help="Texts to send.", min=32)] = 2000,
    data: Annotated[
        Path | None,
        typer.Option(
            help="CSV or JSON Lines with a `text` field; default Banking77 train from ../shared, "
            "else the bundled sample."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print only the JSON result.")] = False,
) -> None:
    """Send N texts through Redis -> worker -> PostgreSQL on a fresh embedded stack; compare with stock encode."""
    from worker.benchmark import bench as run_bench
    from worker.benchmark import load_texts

    with clean_errors():
        texts, source = load_texts(data, n)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            tasks: dict[str, object] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(stage, total=total)
                bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

            result = run_bench(get_settings(), texts, source, progress)
        typer.echo(json.dumps(result, indent=None if as_json else 2))


def register(app: typer.Typer) -> None:
    app.command()(bench)
