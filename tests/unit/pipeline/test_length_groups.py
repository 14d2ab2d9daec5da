"""Grouping texts of similar token length so that a batch pads little."""

from __future__ import annotations

import random

from worker.pipeline.onnx_backend import length_groups


def test_every_index_lands_in_exactly_one_group_longest_first() -> None:
    lengths = [random.Random(0).randint(3, 80) for _ in range(64)]
    groups = length_groups(lengths, 16)
    flat = [i for group in groups for i in group]
    assert sorted(flat) == list(range(64))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert all(len(group) <= 16 for group in groups)


def test_padding_stays_within_the_slack() -> None:
    lengths = [random.Random(1).randint(3, 80) for _ in range(200)]
    for group in length_groups(lengths, 32, slack=0.1):
        real = sum(lengths[i] for i in group)
        assert lengths[group[0]] * len(group) <= 1.1 * real or len(group) == 1


def test_equal_lengths_fill_whole_groups() -> None:
    assert [len(g) for g in length_groups([12] * 40, 16)] == [16, 16, 8]


def test_no_texts_no_groups() -> None:
    assert length_groups([], 16) == []
