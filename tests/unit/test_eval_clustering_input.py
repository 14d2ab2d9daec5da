"""`tagworker eval clustering` input: every bad line is named, never a bare traceback."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from worker.errors import ConfigurationError
from worker.evaluation.clustering import read_groups, score_partition


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


def test_a_group_cut_in_two_costs_completeness_and_two_groups_in_one_theme_cost_homogeneity() -> None:
    groups = ["quote"] * 4 + ["claim"] * 4
    split = score_partition(groups, np.array([0, 0, 1, 1, 2, 2, 2, 2]))
    assert split["homogeneity"] == 100.0 and split["completeness"] < 100.0
    mixed = score_partition(["quote", "quote", "claim", "claim", "bill", "bill"], np.array([0, 0, 0, 0, 1, 1]))
    assert mixed["completeness"] == 100.0 and mixed["homogeneity"] < 100.0
    assert score_partition(groups, np.array([5] * 4 + [7] * 4)) == {
        "nmi": 100.0,
        "ari": 100.0,
        "homogeneity": 100.0,
        "completeness": 100.0,
    }
