"""`tagworker eval clustering` input: every bad line is named, never a bare traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.errors import ConfigurationError
from worker.evaluation.clustering import read_groups


def write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "groups.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_first_tag_is_the_group_and_blank_lines_are_skipped(tmp_path: Path) -> None:
    path = write(
        tmp_path, '{"text": "refund please", "tags": ["refund", "x"]}', "", '{"text": "hi", "tags": ["greet"]}'
    )
    assert read_groups(path, None) == (["refund please", "hi"], ["refund", "greet"])


def test_group_by_names_a_field(tmp_path: Path) -> None:
    path = write(tmp_path, '{"text": "a", "intent": 1}', '{"text": "b", "intent": 2}')
    assert read_groups(path, "intent") == (["a", "b"], ["1", "2"])


@pytest.mark.parametrize(
    ("line", "message"),
    [("not json", r"groups.jsonl:2: expected a JSON object"), ('{"text": "b", "tags": []}', r":2: needs `text`")],
)
def test_a_bad_line_is_named(tmp_path: Path, line: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        read_groups(write(tmp_path, '{"text": "a", "tags": ["t"]}', line), None)
