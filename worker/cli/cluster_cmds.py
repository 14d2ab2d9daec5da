"""`tagworker cluster ...` (run, show, name, map) and `tagworker db grant-dashboard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text
from sqlalchemy import text

from worker.cli.common import clean_errors, console, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import ConfigurationError, ThemeError

cluster_app = typer.Typer(help="Feedback themes: run, show, name, map.", no_args_is_help=True)
db_app = typer.Typer(help="Database administration.", no_args_is_help=True)


def _active_version(database_url: str) -> int:
    from worker.store.search import active_version

    with session_scope(get_engine(database_url)) as session:
        found = active_version(session)
    if found is None:
        raise ConfigurationError("no active model version yet: start a worker and send some events first")
    return found[0]


@cluster_app.command("run")
def run(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Cluster the feedback now, in this process (beat runs it hourly); skipped while another run holds the lock."""
    from worker.clustering import ClusteringService

    with clean_errors():
        settings, urls = settings_and_urls(start_embedded=True)
        service = ClusteringService(
            engine=get_engine(urls.database_url), model_version_id=_active_version(urls.database_url),
            settings=settings.clustering,
        )  # fmt: skip
        with console.status("clustering feedback"):
            summary = service.run()
        if as_json:
            typer.echo(json.dumps(summary.__dict__))
        else:
            console.print(summary.__dict__)
        if summary.status == "failed":
            raise typer.Exit(1)


@cluster_app.command("show")
def show(
    n: Annotated[int, typer.Option("--n", min=1, max=500, help="How many themes.")] = 15,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The largest themes: name or label, trend (last 7 days against the 7 before) and an example."""
    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            rows = session.execute(
                text(
                    "SELECT c.cluster_id, c.label, c.auto_label, c.named_by, c.keywords, c.items, c.last_7_days, "
                    "c.previous_7_days, c.trend, c.first_seen, c.last_seen, (SELECT i.text FROM items i "
                    "WHERE i.id = c.representative_item_ids[1]) AS example "
                    "FROM dashboard.clusters c ORDER BY c.items DESC LIMIT :n"
                ),
                {"n": n},
            ).all()
            noise = session.execute(text("SELECT count(*) FROM dashboard.feedback_clusters WHERE is_noise")).scalar()
        if as_json:
            typer.echo(json.dumps([dict(r._mapping) for r in rows], default=str, indent=2))
            return
        table = Table(title=f"Top {len(rows)} feedback themes ({noise} items are noise)")
        for column in ("id", "label", "items", "7d", "prev 7d", "trend", "example"):
            table.add_column(column, overflow="fold")
        for r in rows:
            trend = f"{r.trend:+d}"
            example = Text(" ".join((r.example or "").split())[:90])  # Text: brackets in feedback are not markup
            table.add_row(str(r.cluster_id), _label_cell(r.label, r.auto_label, r.named_by), str(r.items),
                          str(r.last_7_days), str(r.previous_7_days), trend, example)  # fmt: skip
        console.print(table)


def _label_cell(label: str, auto_label: str, named_by: str | None) -> Text:
    """The label; for a named theme, the name in bold over its automatic label, dimmed."""
    if named_by is None:
        return Text(label)
    return Text.assemble((label, "bold"), "\n", (f"auto: {auto_label}; named by {named_by}", "dim"))


@cluster_app.command("name")
def name(
    theme_id: Annotated[int, typer.Argument(help="The theme's id, from `tagworker cluster show`.")],
    new_name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="What dashboards show instead of the automatic label.")
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Show the automatic label again.")] = False,
    actor: Annotated[str, typer.Option(help="Who names it (stored with the name).")] = "cli",
) -> None:
    """Name a theme ("Card delivery delays"): dashboards and `cluster show` show it, and later runs keep it."""
    from worker.pipeline.theme_names import clean_actor, clean_theme_name
    from worker.store.theme_names import set_theme_name

    with clean_errors():
        if clear and new_name is not None:
            raise ThemeError("give a NAME or --clear, not both")
        if not clear and new_name is None:
            raise ThemeError("give a NAME, or --clear to show the automatic label again")
        theme_name = None if new_name is None else clean_theme_name(new_name)
        who = clean_actor(actor)
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            theme = set_theme_name(session, cluster_id=theme_id, name=theme_name, actor=who)
            session.commit()
        # Text: a name is printed as typed, with no markup (`[/]`) or emoji codes (`:x:`) read into it.
        if theme.name is None:
            console.print(Text(f"theme {theme_id} shows its automatic label again: {theme.auto_label}"))
        else:
            console.print(Text(f"theme {theme_id} is now named {theme.name!r} (automatic label: {theme.auto_label})"))


@cluster_app.command("map")
def map_(
    out: Annotated[Path, typer.Option(help="PNG file to write; missing directories are created.")] = Path(
        "feedback-map.png"
    ),
) -> None:
    """Draw the feedback in 2-D coloured by theme, with the largest themes labelled."""
    from worker.cluster_map import draw_map

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        version = _active_version(urls.database_url)
        with session_scope(get_engine(urls.database_url)) as session:
            try:
                out.parent.mkdir(parents=True, exist_ok=True)
                points = draw_map(session, model_version_id=version, out=out)
            except ValueError as exc:
                raise ConfigurationError(str(exc)) from None
            except OSError as exc:
                raise ConfigurationError(f"cannot write {out} ({exc.strerror or exc}); choose another --out") from None
        console.print(f"wrote {out} ({points} feedback items)")


@db_app.command("grant-dashboard")
def grant_dashboard(
    role: Annotated[str, typer.Argument(help="Role name (created if missing).")],
    password: Annotated[str | None, typer.Option(help="Password; makes the role able to log in.")] = None,
) -> None:
    """Create or update ROLE so that it can SELECT the dashboard views and nothing else."""
    from worker.store.dashboard import grant_dashboard as grant

    with clean_errors():
        _, urls = settings_and_urls(start_embedded=True)
        with get_engine(urls.database_url).begin() as connection:
            grant(connection, role, password)
        console.print(f"role {role} can read the dashboard.* views and nothing else")


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")
    app.add_typer(db_app, name="db")
