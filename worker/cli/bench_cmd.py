"""`tagworker bench`: speed measured as ratios and percentiles in one run; prints JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from numpy.typing import NDArray

from worker.cli.common import clean_errors
from worker.cli.progress import stage_progress
from worker.errors import ConfigurationError
from worker.settings import get_settings

bench_app = typer.Typer(help="Benchmarks; `tagworker bench` alone runs the pipeline benchmark.")


@bench_app.callback(invoke_without_command=True)
def pipeline(
    ctx: typer.Context,
    n: Annotated[int, typer.Option(help="Texts to send (5000: shorter streams measure their ramp-up).", min=32)] = 5000,
    data: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help="CSV or JSON Lines with a `text` field; default Banking77 train from ../shared, "
            "else the bundled sample.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """N texts through Redis -> worker -> PostgreSQL on a fresh embedded stack, against stock encode."""
    if ctx.invoked_subcommand is not None:
        return
    from worker.benchmark import bench, load_texts

    with clean_errors():
        texts, source = load_texts(data, n)
        with stage_progress() as report:
            result = bench(get_settings(), texts, source, report)
        typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command()
def search(
    n: Annotated[int, typer.Option(help="Stored items.", min=100)] = 100_000,
    queries: Annotated[int, typer.Option(help="Queries to time.", min=10)] = 300,
    ef_search: Annotated[int, typer.Option(help="HNSW candidate list size at query time.")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """k=10 search latency and recall@10 (against exact search) over N items through the HNSW index."""
    from worker.benchmark_search import bench_search

    with clean_errors(), stage_progress() as report:
        result = bench_search(get_settings(), n, queries, ef_search, report)
    typer.echo(json.dumps(result, indent=None if as_json else 2))


@bench_app.command()
def clustering(
    n: Annotated[int, typer.Option(min=10, help="Feedback vectors to cluster.")] = 100_000,
    vectors: Annotated[
        Path | None, typer.Option(exists=True, dir_okay=False, help="A .npy of (n, dims) vectors instead.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print compact JSON.")] = False,
) -> None:
    """Seconds and peak RSS of a clustering run over N vectors (synthetic unless --vectors), and assignment cost."""
    from worker.clustering import params_from
    from worker.evaluation.clustering import bench_clustering, synthetic_vectors
    from worker.pipeline.cluster import unit_rows

    with clean_errors():
        data = unit_rows(read_vectors(vectors)) if vectors else synthetic_vectors(n)
        result = bench_clustering(data, params_from(get_settings().clustering))
        result["data"] = str(vectors) if vectors else "synthetic: 200 uneven themes, 384-d"
        typer.echo(json.dumps(result, indent=None if as_json else 2))


def read_vectors(path: Path) -> NDArray[np.floating]:
    """The (n, dims) matrix saved in a .npy file, or an error that says what the file holds instead."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(6)
        matrix = np.load(path, allow_pickle=False) if magic == b"\x93NUMPY" else None
    except (OSError, ValueError, EOFError) as exc:  # unreadable, truncated, or an object array (needs pickle)
        raise ConfigurationError(f"cannot read {path}: {exc}; save the vectors with numpy.save") from None
    if matrix is None:
        kind = "a .npz archive" if magic.startswith(b"PK") else "not a .npy file"
        raise ConfigurationError(f"{path} is {kind}; save one (n, dims) array with numpy.save")
    numeric = np.issubdtype(matrix.dtype, np.floating) or np.issubdtype(matrix.dtype, np.integer)
    if matrix.ndim != 2 or len(matrix) < 2 or not numeric:
        raise ConfigurationError(
            f"{path} holds a {matrix.dtype} array of shape {matrix.shape}; expected (n, dims) numbers with n >= 2"
        )
    if not np.isfinite(matrix).all():
        raise ConfigurationError(f"{path} holds NaN or infinite values")
    return matrix


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
