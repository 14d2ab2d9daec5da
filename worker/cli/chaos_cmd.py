"""`tagworker chaos`: the fault-injection scenarios on a throwaway stack; prints the checker's counts per fault."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from worker.cli.common import console
from worker.cli.progress import stage_progress


def chaos(
    events: Annotated[int, typer.Option(help="Events in the SIGKILL stream.", min=50)] = 5000,
    kills: Annotated[int, typer.Option(help="SIGKILLs spread over that stream.", min=1)] = 5,
    side_events: Annotated[int, typer.Option(help="Events per SIGTERM, restart and poison stream.", min=50)] = 1000,
    fuzz: Annotated[int, typer.Option(help="Generated bad-input payloads.", min=100)] = 5000,
    concurrency: Annotated[int, typer.Option(help="Pool processes per worker (0: one per core).", min=0)] = 0,
    only: Annotated[list[str] | None, typer.Option(help="Run only this fault (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """Kill, stop and starve real workers on a fresh embedded stack; exit 1 if anything is lost or done twice."""
    try:
        from worker.chaos.runner import FAULTS, run_chaos
        from worker.chaos.stream_faults import ChaosParams
    except ImportError as exc:  # hypothesis comes with the test extra
        console.print(f"[red]error:[/red] {exc}; install the test extra: pip install -e '.[test]'")
        raise typer.Exit(2) from exc
    unknown = sorted(set(only or ()) - set(FAULTS))
    if unknown:
        console.print(f"[red]error:[/red] unknown fault {unknown}; choose from {', '.join(FAULTS)}")
        raise typer.Exit(2)
    params = ChaosParams(events=events, kills=kills, side_events=side_events, fuzz=fuzz, concurrency=concurrency)
    with stage_progress() as report:
        results = run_chaos(params, only=only or (), report=report)
    typer.echo(json.dumps(results, indent=None if as_json else 2))
    bad = [name for name, r in results.items() if "error" in r or r.get("lost") or r.get("duplicate_effects")]
    if bad:
        console.print(f"[red]failed:[/red] {', '.join(bad)}")
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command()(chaos)
