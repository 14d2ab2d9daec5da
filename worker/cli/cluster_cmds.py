"""`tagworker cluster ...` (run, show, map) and `tagworker db grant-dashboard`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy import text

from worker.cli.common import clean_errors, console, settings_and_urls
from worker.db import get_engine, session_scope
from worker.errors import ConfigurationError

cluster_app = typer.Typer(help="Feedback themes: run, show, map.", no_args_is_help=True)
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
    """The largest themes with keywords, trend (last 7 days against the 7 before) and an example."""
    with clean_errors():
        _, urls = settings_and_urls(start_embedded=False)
        with session_scope(get_engine(urls.database_url)) as session:
            rows = session.execute(
                text(
                    "SELECT c.cluster_id, c.label, c.keywords, c.items, c.last_7_days, c.previous_7_days, c.trend, "
                    "c.first_seen, c.last_seen, (SELECT i.text FROM items i "
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
            table.add_row(str(r.cluster_id), r.label, str(r.items), str(r.last_7_days), str(r.previous_7_days), trend,
                          " ".join((r.example or "").split())[:90])  # fmt: skip
        console.print(table)


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
