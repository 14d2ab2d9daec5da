"""Input files that are not what a command expects fail with one line naming the file and line, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from worker.cli import app
from worker.data_convert import convert
from worker.errors import ConfigurationError
from worker.jsonl import json_lines


def _tagworker(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_a_line_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(ConfigurationError, match=r"latin1\.jsonl:2: not UTF-8 .*byte 0xe9.*save the file as UTF-8"):
        list(json_lines(path, "an object"))


def test_windows_line_endings_and_a_utf8_mark_are_read(tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "caf\xc3\xa9"}\r\n\r\n{"text": "b"}\r\n')
    assert list(json_lines(path, "an object")) == [(1, {"text": "café"}), (3, {"text": "b"})]


def test_train_pairs_add_names_a_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(
        b'{"a": "CAC", "b": "customer acquisition cost", "score": 1}\n{"a": "\xff", "b": "x", "score": 1}\n'
    )
    code, output = _tagworker("train", "pairs", "add", str(path))
    assert code == 2 and "pairs.jsonl:2: not UTF-8" in output, output


def _dstc11(source: Path, content: bytes) -> Path:
    (source / "dstc11_intents").mkdir(parents=True)
    (source / "dstc11_intents" / "utterances.jsonl").write_bytes(content)
    return source


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"domain": "d", "text": "caf\xe9", "intent": "i"}\n', "utterances.jsonl:1: not UTF-8"),
        (
            b'{"domain": "d", "text": "t", "intent": "i"}\n["d", "t", "i"]\n',
            "utterances.jsonl:2: expected a JSON object",
        ),
        (b'"just text"\n', "utterances.jsonl:1: expected a JSON object"),
        (b'{"domain": "d", "text": "t"}\n', "utterances.jsonl:1: no field 'intent'"),
        (b'{"domain": "d", "text": 7, "intent": "i"}\n', "utterances.jsonl:1: field 'text' must be a string"),
    ],
)
def test_data_convert_names_the_bad_line(tmp_path: Path, content: bytes, message: str) -> None:
    source = _dstc11(tmp_path / "data", content)
    code, output = _tagworker("data", "convert", "dstc11", "--source", str(source), "--out", str(tmp_path / "out"))
    assert code == 2 and message in output, output


def test_goemotions_labels_must_be_a_list_of_strings(tmp_path: Path) -> None:
    (tmp_path / "goemotions").mkdir()
    (tmp_path / "goemotions" / "comments.jsonl").write_text('{"split": "train", "text": "t", "labels": "joy"}\n')
    code, output = _tagworker("data", "convert", "goemotions", "--source", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and "comments.jsonl:1: field 'labels' must be a list of strings" in output, output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"text,category\nfine,a\ncaf\xe9,b\n", "train.csv:3: not UTF-8"),
        (b"text,label\nfine,a\n", "train.csv:2: no column 'category'"),
        (b"text,category\n" + b"x" * 200_000 + b",a\n", "train.csv:2: field larger than field limit"),
    ],
)
def test_banking77_names_the_bad_row(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "banking77").mkdir()
    (tmp_path / "banking77" / "train.csv").write_bytes(content)
    (tmp_path / "banking77" / "test.csv").write_bytes(b"text,category\nok,a\n")
    code, output = _tagworker("data", "convert", "banking77", "--source", str(tmp_path), "--out", str(tmp_path / "o"))
    assert code == 2 and message in output, output


def test_data_convert_still_writes_good_files(tmp_path: Path) -> None:
    source = _dstc11(tmp_path / "data", b'{"domain": "bank", "text": "caf\xc3\xa9", "intent": "i"}\n\n')
    code, output = _tagworker("data", "convert", "dstc11", "--source", str(source), "--out", str(tmp_path / "out"))
    assert code == 0, output
    assert (tmp_path / "out" / "dstc11-bank.jsonl").read_text(encoding="utf-8") == '{"text": "café", "tags": ["i"]}\n'


def test_a_failed_data_convert_leaves_no_partial_file(tmp_path: Path) -> None:
    """A bad row after good ones used to leave truncated .jsonl files that `tagworker eval` would read as whole."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "dstc11-bank.jsonl").write_text("from an earlier run\n", encoding="utf-8")
    lines = b'{"domain": "bank", "text": "a", "intent": "i"}\n{"domain": "travel", "text": "b", "intent": "j"}\n'
    source = _dstc11(tmp_path / "data", lines + b'{"domain": "bank", "text": 7, "intent": "i"}\n')
    code, output = _tagworker("data", "convert", "dstc11", "--source", str(source), "--out", str(out))
    assert code == 2 and "utterances.jsonl:3: field 'text' must be a string" in output, output
    assert sorted(path.name for path in out.iterdir()) == ["dstc11-bank.jsonl"]
    assert (out / "dstc11-bank.jsonl").read_text(encoding="utf-8") == "from an earlier run\n"


def _apps(root: Path, rows: list[dict[str, object]]) -> Path:
    (root / "appstore_descriptions").mkdir(parents=True)
    lines = "".join(json.dumps(row) + "\n" for row in rows)
    (root / "appstore_descriptions" / "apps.jsonl").write_text(lines, encoding="utf-8")
    return root


def test_appstore_copy_is_split_by_app_id_and_only_english_listings_are_kept(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [
        {"app_id": n, "genre": "Games" if n % 2 else "Finance", "description": f"Listing {n}", "mostly_ascii": True}
        for n in range(200)
    ]
    rows.append({"app_id": 999, "genre": "Games", "description": "日本語の説明", "mostly_ascii": False})
    source = _apps(tmp_path / "data", rows)
    counts = [convert("appstore", source, tmp_path / f"out{run}") for run in (1, 2)]
    assert counts[0] == counts[1], "the split needs no seed: the same on every machine"
    assert sum(counts[0].values()) == 200 and 20 < counts[0]["appstore-test.jsonl"] < 60, counts[0]
    first = json.loads((tmp_path / "out1" / "appstore-train.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"text", "tags"} and first["tags"][0] in {"Games", "Finance"}


def test_appstore_names_a_listing_without_a_genre(tmp_path: Path) -> None:
    source = _apps(tmp_path / "data", [{"app_id": 1, "description": "An app", "mostly_ascii": True}])
    code, output = _tagworker("data", "convert", "appstore", "--source", str(source), "--out", str(tmp_path / "o"))
    assert code == 2 and "apps.jsonl:1: no field 'genre'" in output, output
