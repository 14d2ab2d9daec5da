"""`tagworker bench`: pipeline throughput against stock encode, in the same run."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    pass
