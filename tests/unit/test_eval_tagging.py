"""Pure parts of `tagworker eval tagging`: reading lines, keeping shots, F1."""

from __future__ import annotations

import pytest

from worker.errors import ConfigurationError
from worker.evaluation.tagging import Labelled, f1_scores, keep_shots, read_labelled, taxonomy_for


def test_keep_shots_keeps_n_lines_per_tag() -> None:
    data = Labelled([f"t{i}" for i in range(30)], [["a"] if i % 3 else ["b"] for i in range(30)])
    kept = keep_shots(data, 4, seed=0)
    assert sorted(t[0] for t in kept.tags) == ["a"] * 4 + ["b"] * 4


def test_f1_counts_micro_and_macro() -> None:
    micro, macro = f1_scores([{"a"}, {"b"}, set()], [{"a"}, {"a"}, {"b"}])
    assert micro == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))
    assert macro == pytest.approx((2 / 3 + 0) / 2)


def test_the_data_decides_single_or_multi_label() -> None:
    single = Labelled(["x"], [["a"]])
    multi = Labelled(["y"], [["a", "b"]])
    assert not taxonomy_for(single, single).facets[0].multi_label
    assert taxonomy_for(single, multi).facets[0].multi_label


def test_a_bad_line_names_its_number(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "ok", "tags": ["a"]}\n{"text": "", "tags": ["a"]}\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match=":2:"):
        read_labelled(path)
