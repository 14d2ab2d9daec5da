"""Rank fusion and retrieval metrics, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from worker.pipeline.ranking import mrr_at_k, ndcg_at_k, recall_at_k, reciprocal_rank_fusion


def test_rrf_rewards_items_ranked_well_in_both_lists() -> None:
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert [key for key, _ in fused] == ["b", "a", "d", "c"]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_ndcg_with_graded_relevance() -> None:
    # DCG = 1/log2(2) + 2/log2(4) = 2; ideal = 2/log2(2) + 1/log2(3)
    assert ndcg_at_k(["a", "b", "c"], {"a": 1, "c": 2}, 10) == pytest.approx(2 / (2 + 1 / math.log2(3)))


def test_ndcg_is_one_for_a_perfect_ranking_and_zero_without_relevant_items() -> None:
    assert ndcg_at_k(["x", "y"], {"x": 1}, 10) == 1.0
    assert ndcg_at_k(["x", "y"], {"z": 1}, 10) == 0.0
    assert ndcg_at_k(["x"], {}, 10) == 0.0


def test_mrr_counts_only_the_first_relevant_item_within_k() -> None:
    assert mrr_at_k(["a", "b", "c"], {"c": 1, "b": 1}, 10) == 0.5
    assert mrr_at_k(["a", "b", "c"], {"c": 1}, 2) == 0.0


def test_recall_at_k() -> None:
    assert recall_at_k(["a", "b", "c"], {"a": 1, "d": 1}, 100) == 0.5
    assert recall_at_k(["a", "b", "c"], {"c": 1}, 2) == 0.0
