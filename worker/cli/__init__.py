"""`tagworker`: the one command users run."""

from __future__ import annotations

import logging
import os
import sys

import typer

from worker.cli import (
    bench_cmd,
    chaos_cmd,
    cluster_cmds,
    data_cmds,
    eval_cmds,
    model_cmds,
    run_cmds,
    search_cmds,
    tag_cmds,
)
from worker.settings import get_settings

app = typer.Typer(
    name="tagworker",
    help="Embed, tag and cluster marketing content and customer feedback from Redis into PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
run_cmds.register(app)
data_cmds.register(app)
bench_cmd.register(app)
search_cmds.register(app)
eval_cmds.register(app)
tag_cmds.register(app)
cluster_cmds.register(app)
chaos_cmd.register(app)
model_cmds.register(app)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=_log_level(),
        format="%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    app()


def _log_level() -> str:
    """TAGWORKER_LOG_LEVEL (environment or .env); WARNING while the settings are invalid, which the command
    then reports as a clean error (so `--help` still works)."""
    try:
        return get_settings().log_level
    except ValueError:  # pydantic's ValidationError and pydantic-settings' SettingsError
        return "WARNING"
