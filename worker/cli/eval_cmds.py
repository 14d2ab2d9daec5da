"""`tagworker eval ...`: quality measured through the product's own code paths; prints JSON."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from worker.cli.common import clean_errors
from worker.cli.progress import stage_progress
from worker.settings import Settings, get_settings

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
        settings = _with_model(get_settings(), model)
        docs, questions, judgements = read_jsonl_docs(corpus), read_jsonl_docs(queries), read_qrels(qrels)
        with stage_progress() as report:
            result = evaluate(settings, docs, questions, judgements, hybrid=hybrid, progress=report)
        typer.echo(json.dumps(result, indent=None if as_json else 2))


@eval_app.command()
def tagging(
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help='Lines {"text", "tags": [...]}.')],
    test: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Held-out lines, same format.")],
    shots: Annotated[int | None, typer.Option(min=1, help="Keep N training lines per tag.")] = None,
    zero_shot: Annotated[bool, typer.Option("--zero-shot", help="Use only tag names (and descriptions).")] = False,
    taxonomy: Annotated[Path | None, typer.Option(exists=True, dir_okay=False, help="Taxonomy YAML/JSON.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for shots and held-out splits.")] = 0,
    baseline: Annotated[bool, typer.Option(help="Also score TF-IDF + logistic regression on the same split.")] = False,
    model: Annotated[str | None, typer.Option(help="Model name or directory (default: the configured one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """accuracy, micro/macro F1 and coverage of the worker's tagger fitted on TRAIN, scored on TEST."""
    from worker.evaluation.tagging import evaluate_tagging, read_labelled
    from worker.pipeline.embed import load_embedder
    from worker.pipeline.taxonomy import read_taxonomy

    with clean_errors():
        settings = _with_model(get_settings(), model)
        tax = read_taxonomy(taxonomy) if taxonomy else None
        train_set, test_set = read_labelled(train), read_labelled(test)
        embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
        with stage_progress() as report:
            result = evaluate_tagging(
                embedder, train_set, test_set, taxonomy=tax, shots=shots, zero_shot=zero_shot, seed=seed,
                baseline=baseline, progress=report,
            )  # fmt: skip
        typer.echo(json.dumps(result, indent=None if as_json else 2))


@eval_app.command()
def clustering(
    data: Annotated[Path, typer.Option(exists=True, dir_okay=False, help='Lines {"text", "tags": [...]}.')],
    group_by: Annotated[str | None, typer.Option(help="Field with the gold group (default: first tag).")] = None,
    model: Annotated[str | None, typer.Option(help="Model name or directory (default: the configured one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """NMI, ARI, clusters and noise share of the worker's clustering on labelled lines (k is not given)."""
    from worker.clustering import params_from
    from worker.evaluation.clustering import evaluate_clustering, read_groups
    from worker.pipeline.embed import load_embedder

    with clean_errors():
        settings = _with_model(get_settings(), model)
        texts, groups = read_groups(data, group_by)
        embedder = load_embedder(settings.model, cache_dir=settings.data_dir / "onnx")
        result = evaluate_clustering(embedder, texts, groups, params_from(settings.clustering))
        typer.echo(json.dumps(result, indent=None if as_json else 2))


@eval_app.command()
def retrain(
    train: Annotated[Path, typer.Option(exists=True, dir_okay=False, help='Lines {"text", "tags": [...]}.')],
    test: Annotated[Path, typer.Option(exists=True, dir_okay=False, help="Held-out lines, same format.")],
    shots: Annotated[int | None, typer.Option(min=1, help="Keep N training lines per tag.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for shots, pairs and training.")] = 0,
    model: Annotated[str | None, typer.Option(help="Model name or directory (default: the configured one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """One retraining loop with TRAIN's labels as the corrections: stock vs fine-tuned tagging and retrieval."""
    from dataclasses import replace

    from sentence_transformers import SentenceTransformer

    from worker.evaluation.retrain import evaluate_retrain
    from worker.evaluation.tagging import read_labelled
    from worker.pipeline.embed import pick_device, resolve_model_path
    from worker.retraining import train_params

    with clean_errors():
        settings = _with_model(get_settings(), model)
        train_set, test_set = read_labelled(train), read_labelled(test)
        st_model = SentenceTransformer(
            resolve_model_path(settings.model.name_or_path), device=pick_device(settings.model.device),
            trust_remote_code=False,
        )  # fmt: skip
        params = replace(train_params(settings), seed=seed)
        with stage_progress() as report, contextlib.redirect_stdout(sys.stderr):
            result = evaluate_retrain(
                st_model, train_set, test_set, shots=shots, seed=seed, params=params, progress=report,
                show_progress=True,
            )  # fmt: skip
        typer.echo(json.dumps(result, indent=None if as_json else 2))


def _with_model(settings: Settings, model: str | None) -> Settings:
    if not model:
        return settings
    return settings.model_copy(update={"model": settings.model.model_copy(update={"name_or_path": model})})


def register(app: typer.Typer) -> None:
    app.add_typer(eval_app, name="eval")
