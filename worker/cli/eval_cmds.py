"""`tagworker eval ...`: quality measured through the product's own code paths; prints JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import clean_errors
from worker.cli.progress import stage_progress
from worker.settings import get_settings

eval_app = typer.Typer(help="Score tagworker on labelled data; prints JSON.", no_args_is_help=True)


@eval_app.command()
def retrieval(
    corpus: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="BEIR corpus.jsonl: {_id, text}.")],
    queries: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="BEIR queries.jsonl: {_id, text}.")],
    qrels: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="TSV query-id, corpus-id, score.")],
    model: Annotated[str | None, typer.Option(help="Model name or directory (default: the configured one).")] = None,
    hybrid: Annotated[bool, typer.Option(help="Fuse with full-text rank (RRF).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """nDCG@10, MRR@10 and recall@100 of `tagworker search` on a BEIR-format set, on a fresh embedded database."""
    from worker.evaluation.retrieval import evaluate, read_jsonl_docs, read_qrels

    with clean_errors():
        settings = get_settings()
        if model:
            settings = settings.model_copy(update={"model": settings.model.model_copy(update={"name_or_path": model})})
        with stage_progress() as report:
            result = evaluate(
                settings, read_jsonl_docs(corpus), read_jsonl_docs(queries), read_qrels(qrels), hybrid=hybrid,
                progress=report,
            )  # fmt: skip
        typer.echo(json.dumps(result, indent=None if as_json else 2))


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
