"""Plain user mistakes (a bad setting, a wrong file, a negative count) end in one line and exit 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.errors import ConfigurationError
from worker.evaluation.retrieval import read_qrels


def _tagworker(*args: str) -> tuple[int, str]:
    """Exit code and output, with the lines of typer's boxed usage errors joined back up."""
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def _tagworker_process(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The installed entry point in a directory without .env, with only `env` among the TAGWORKER_* variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("TAGWORKER_")}
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env={**clean, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TAGWORKER_BATCHING__FLUSH_EVERY": "0"},
         "error: TAGWORKER_BATCHING__FLUSH_EVERY='0': Input should be greater than or equal to 1"),
        ({"TAGWORKER_LOG_LEVEL": "verbose"},
         "error: TAGWORKER_LOG_LEVEL: 'verbose' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"),
    ],
    ids=["flush-every", "log-level"],
)  # fmt: skip
def test_a_bad_setting_is_one_line_naming_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    """A bad value printed pydantic's traceback; a bad log level crashed in logging.basicConfig before any command."""
    result = _tagworker_process(tmp_path, "status", **env)

    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == message, result.stderr


def test_help_still_works_with_a_bad_setting(tmp_path: Path) -> None:
    result = _tagworker_process(tmp_path, "--help", TAGWORKER_LOG_LEVEL="verbose")

    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("events.jsonl", b'{"text": "fine"}\nnot json\n', 'events.jsonl:2: expected a JSON object with a "text"'),
        ("events.jsonl", b'{"text": "fine"}\n{"body": "x"}\n', 'events.jsonl:2: expected a JSON object with a "text"'),
        ("texts.csv", b"label,body\na,b\n", "texts.csv:1: no `text` column (the header has: label, body)"),
        ("texts.csv", b"id,text\n1,fine\n2\n", "texts.csv:3: no value in the `text` column"),
        ("empty.jsonl", b"\n", "empty.jsonl has no texts"),
    ],
)
def test_bench_names_the_bad_line_of_its_data(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)

    code, output = _tagworker("bench", "--n", "32", "--data", str(tmp_path / name))

    assert code == 2 and message in output, output


def test_bench_refuses_a_data_file_that_does_not_exist(tmp_path: Path) -> None:
    code, output = _tagworker("bench", "--n", "32", "--data", str(tmp_path / "nope.jsonl"))

    assert code == 2 and "does not exist" in output, output


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.ones(5), "holds a float64 array of shape (5,); expected (n, dims) numbers"),
        (np.array([["a", "b"], ["c", "d"]]), "holds a <U1 array of shape (2, 2)"),
        (np.array([[1.0, np.nan], [0.0, 1.0]]), "holds NaN or infinite values"),
    ],
    ids=["one-dimensional", "strings", "nan"],
)
def test_bench_clustering_says_what_is_wrong_with_the_vectors(tmp_path: Path, vectors: object, message: str) -> None:
    path = tmp_path / "vectors.npy"
    np.save(path, vectors)

    code, output = _tagworker("bench", "clustering", "--vectors", str(path))

    assert code == 2 and message in output, output


def test_bench_clustering_refuses_a_file_that_is_not_npy(tmp_path: Path) -> None:
    path = tmp_path / "vectors.jsonl"
    path.write_text("[0.1, 0.2]\n")

    code, output = _tagworker("bench", "clustering", "--vectors", str(path))

    assert code == 2 and "vectors.jsonl is not a .npy file; save one (n, dims) array with numpy.save" in output, output
    code, output = _tagworker("bench", "clustering", "--vectors", str(tmp_path))
    assert code == 2 and "is a directory" in output, output


def _beir(tmp_path: Path, *, corpus: str, qrels: str) -> list[str]:
    (tmp_path / "corpus.jsonl").write_text(corpus)
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "refund"}\n')
    (tmp_path / "qrels.tsv").write_text(qrels)
    return [f"--{name}={tmp_path / file}" for name, file in
            (("corpus", "corpus.jsonl"), ("queries", "queries.jsonl"), ("qrels", "qrels.tsv"))]  # fmt: skip


def test_eval_retrieval_names_a_corpus_line_without_an_id(tmp_path: Path) -> None:
    files = _beir(tmp_path, corpus='{"_id": "d1", "text": "a"}\n{"text": "b"}\n', qrels="q1\td1\t1\n")

    code, output = _tagworker("eval", "retrieval", *files)

    assert code == 2 and 'corpus.jsonl:2: expected a JSON object with "_id" and a "text" string' in output, output


def test_eval_retrieval_refuses_qrels_about_other_queries_before_embedding_anything(tmp_path: Path) -> None:
    """It used to embed the whole corpus, then print ndcg10 0.0 over 0 queries and exit 0."""
    files = _beir(tmp_path, corpus='{"_id": "d1", "text": "a"}\n', qrels="query-id\tcorpus-id\tscore\nQ-1\td1\t1\n")

    code, output = _tagworker("eval", "retrieval", *files)

    assert code == 2, output
    assert "none of the 1 queries has a judgement in the qrels (1 query ids there, e.g. 'Q-1')" in output, output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1 0 d1 1\n", r"qrels\.tsv:2: expected query-id<TAB>corpus-id<TAB>score, got 1"),
        ("q1\t0\td1\t1\n", r"qrels\.tsv:1: expected query-id<TAB>corpus-id<TAB>score, got 4 column"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", r"qrels\.tsv:2: expected query-id"),
        ("query-id\tcorpus-id\tscore\n\n", r"qrels\.tsv has no judgements"),
    ],
    ids=["trec-spaces", "trec-tabs", "score-not-a-number", "header-only"],
)
def test_qrels_in_another_format_are_refused_not_read_as_empty(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text(content)

    with pytest.raises(ConfigurationError, match=message):
        read_qrels(path)


def test_qrels_are_read_with_or_without_a_header(tmp_path: Path) -> None:
    path = tmp_path / "qrels.tsv"
    path.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t2\n")
    assert read_qrels(path) == {"q1": {"d1": 1.0, "d2": 2.0}}
    path.write_text("q1\td1\t1\r\n")
    assert read_qrels(path) == {"q1": {"d1": 1.0}}


@pytest.mark.parametrize("command", ["worker", "up"])
def test_a_negative_concurrency_is_refused(command: str) -> None:
    """Celery logged "Unrecoverable error" for -1 and the worker exited 0."""
    code, output = _tagworker(command, "--concurrency", "-1")

    assert code == 2 and "Invalid value for '--concurrency'" in output, output
