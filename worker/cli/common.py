"""Helpers shared by the CLI commands: settings, service URLs, and turning errors into clean exits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console

from worker.errors import TagworkerError
from worker.services import ServiceUrls, resolve
from worker.settings import Settings, get_settings

console = Console(stderr=True, soft_wrap=True)


@contextmanager
def clean_errors() -> Iterator[None]:
    """Print a tagworker error as one line and exit 2, instead of a traceback."""
    try:
        yield
    except TagworkerError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


def settings_and_urls(*, start_embedded: bool = True) -> tuple[Settings, ServiceUrls]:
    settings = get_settings()
    return settings, resolve(settings, start_embedded=start_embedded)
