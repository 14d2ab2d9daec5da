"""`tagworker search` and `tagworker similar`."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from worker.cli.common import clean_errors, console
from worker.store.search import Hit


def _show(hits: list[Hit], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps([asdict(h) for h in hits], default=str, indent=2))
        return
    table = Table(title=title)
    for column in ("score", "kind", "id", "text"):
        table.add_column(column, overflow="fold")
    for hit in hits:
        snippet = (f"{hit.title} — " if hit.title else "") + " ".join(hit.text.split())
        table.add_row(f"{hit.score:.3f}", hit.kind, hit.external_id, snippet[:160])
    console.print(table)


def search(
    query: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    kind: Annotated[str | None, typer.Option(help="content or feedback.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only items with this tag.")] = None,
    since: Annotated[datetime | None, typer.Option(help="Only items that occurred on or after this date.")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="How many results.")] = 10,
    hybrid: Annotated[bool, typer.Option(help="Fuse with PostgreSQL full-text rank (RRF).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Items closest in meaning to QUERY, through the active model version's HNSW index."""
    from worker.search import Searcher

    with clean_errors():
        hits = Searcher.from_settings().search(query, k=k, kind=kind, tag=tag, since=since, hybrid=hybrid)
        _show(hits, as_json, f"search: {query}")


def similar(
    item: Annotated[str, typer.Argument(help="kind/external_id (e.g. content/brief-002), an external id, or an id.")],
    k: Annotated[int, typer.Option("-k", "--k", help="How many results.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The items most like ITEM (e.g. a new campaign brief against past ones)."""
    from worker.search import Searcher

    with clean_errors():
        _show(Searcher.from_settings().similar(item, k=k), as_json, f"similar to {item}")


def register(app: typer.Typer) -> None:
    app.command()(search)
    app.command()(similar)
