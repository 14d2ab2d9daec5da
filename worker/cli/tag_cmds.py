"""`tagworker tags ...` (the taxonomy) and `tagworker tag ...` (items: correct, review, show)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.orm import Session

from worker.cli.common import clean_errors, console, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import CorrectionError

tags_app = typer.Typer(help="The tag taxonomy.", no_args_is_help=True)
tag_app = typer.Typer(help="Tags of items: correct, review, show.", no_args_is_help=True)


@tags_app.command("load")
def load(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Taxonomy YAML or JSON.")]) -> None:
    """Store FILE as the current taxonomy; tags it drops are retired, and human tags on them are kept.

    A tag's `renamed_from` renames the stored tag, keeping its labels. Items with two human tags of a facet that is
    single-label now are counted, for someone to correct.
    """
    from worker.pipeline.taxonomy import read_taxonomy
    from worker.store.review import single_label_conflicts
    from worker.store.tags import save_taxonomy

    with clean_errors():
        taxonomy = read_taxonomy(file)
        _, urls = settings_and_urls(start_embedded=True)
        with session_scope(get_engine(urls.database_url)) as session:
            saved = save_taxonomy(session, taxonomy)
            conflicts = single_label_conflicts(session)
            session.commit()
        state = "loaded as version" if saved.created else "unchanged; still version"
        console.print(f"taxonomy {taxonomy.name!r} ({len(taxonomy.tag_names)} tags) {state} {saved.version_id}")
        for rename in saved.renamed:
            console.print(f"renamed tag {rename.old!r} to {rename.new!r}; its labels and tags carry over", markup=False)
        for tag, olds in saved.unmatched_renames.items():
            console.print(f"note: tag {tag!r} is renamed_from {', '.join(map(repr, olds))}, but no stored tag has "
                          "that name: it starts with no labels", markup=False)  # fmt: skip
        for c in conflicts:
            console.print(
                f"review: {c.items} item(s) have two or more human tags of single-label facet {c.facet!r} "
                f"(e.g. {', '.join(c.examples)}); the tagger learns nothing about that facet from them until someone "
                "keeps one: `tagworker tag correct ITEM --add TAG`",
                markup=False,
            )


@tags_app.command("list")
def list_tags(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Tags by facet, with how many items carry each (model and human)."""
    from worker.store.review import tag_usage

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            rows = tag_usage(session)
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title="Tags")
        for column in ("facet", "tag", "model items", "human items", "state"):
            table.add_column(column)
        for r in rows:
            state = "retired" if r["retired"] else ("multi-label" if r["multi_label"] else "single-label")
            table.add_row(str(r["facet"]), str(r["tag"]), str(r["model_items"]), str(r["human_items"]), state)
        console.print(table)


@tag_app.command("correct")
def correct(
    item: Annotated[str, typer.Argument(help="kind/external_id, an external id, or an item id.")],
    add: Annotated[list[str] | None, typer.Option("--add", help="Tag to add (repeatable).")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="Tag to remove (repeatable).")] = None,
    actor: Annotated[str, typer.Option(help="Who decided (stored with the correction).")] = "cli",
) -> None:
    """Set an item's tags by hand: takes effect at once, and the model never overwrites it."""
    from worker.store.item_tags import apply_correction

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            item_id = _item_id(session, item)
            result = apply_correction(
                session, event_id=uuid.uuid4(), item_id=item_id, added=add or [], removed=remove or [],
                actor=actor, corrected_at=datetime.now(UTC),
            )  # fmt: skip
            session.commit()
        assert result is not None
        before, after = result
        console.print(f"{item}: [{', '.join(before)}] -> [{', '.join(after)}]", markup=False)


@tag_app.command("show")
def show(
    item: Annotated[str, typer.Argument(help="kind/external_id, an external id, or an item id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """An item's tags with score, source (model or human) and head."""
    from worker.store.review import tags_of_item

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            rows = tags_of_item(session, _item_id(session, item))
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
            return
        table = Table(title=f"Tags of {item}")
        for column in ("facet", "tag", "score", "source", "head"):
            table.add_column(column)
        for r in rows:
            tag = str(r["tag"]) + (" (retired)" if r["retired"] else "")
            table.add_row(str(r["facet"]), tag, f"{r['score']:.2f}", str(r["source"]), str(r["head"]))
        console.print(table)


@tag_app.command("review")
def review(
    n: Annotated[int, typer.Option("--n", min=1, max=1000, help="How many items.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The items whose tags are least certain: correcting these teaches the tagger the most."""
    from worker.store.review import review_queue

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            items = review_queue(session, n)
        if as_json:
            typer.echo(json.dumps([i.__dict__ for i in items], indent=2))
            return
        table = Table(title=f"{len(items)} items to review (smallest margin to a threshold first)")
        for column in ("item", "margin", "tags now", "text"):
            table.add_column(column, overflow="fold")
        for i in items:
            margin = "-" if i.margin is None else f"{i.margin:.3f}"
            table.add_row(
                f"{i.kind}/{i.external_id}",
                margin,
                ", ".join(i.tags + [f"{t} (retired)" for t in i.retired_tags]),
                " ".join(i.text.split())[:120],
            )
        console.print(table)


def _item_id(session: Session, ref: str) -> int:
    from worker.store.search import find_item

    item_id = find_item(session, ref)
    if item_id is None:
        raise CorrectionError(f"no single item matches {ref!r}; use kind/external_id")
    return item_id


def register(app: typer.Typer) -> None:
    app.add_typer(tags_app, name="tags")
    app.add_typer(tag_app, name="tag")
