"""Chunking: long texts are cut at token boundaries into windows, and the windows' vectors pooled back."""

from __future__ import annotations

import re

import numpy as np
import pytest

from worker.pipeline.chunking import ChunkPlan, plan_chunks, pool_chunks, windows_from_offsets


def word_offsets(text: str) -> list[tuple[int, int]]:
    """One token per whitespace-separated word, like a fast tokenizer's offset mapping."""
    return [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]


class RecordingTokenizer:
    """A `TokenizeOffsets` that splits on whitespace and records what it was asked to tokenize."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> list[list[tuple[int, int]]]:
        self.calls.append(list(texts))
        return [word_offsets(t) for t in texts]


def test_a_text_that_fits_the_window_is_one_piece() -> None:
    text = "aa bb cc"

    assert windows_from_offsets(text, word_offsets(text), window=3, max_chunks=4) == ([text], [3], 1)


def test_a_text_with_no_tokens_is_one_piece_of_weight_one() -> None:
    assert windows_from_offsets("   ", [], window=3, max_chunks=4) == (["   "], [1], 1)


def test_a_long_text_is_cut_at_token_boundaries_into_windows() -> None:
    text = "alpha beta  gamma delta\nepsilon"

    pieces, sizes, total = windows_from_offsets(text, word_offsets(text), window=2, max_chunks=10)

    assert pieces == ["alpha beta", "gamma delta", "epsilon"]
    assert sizes == [2, 2, 1]
    assert total == 3


def test_windows_never_split_a_multi_character_token() -> None:
    text = "unbelievably long words everywhere"
    offsets = word_offsets(text)

    pieces, _, _ = windows_from_offsets(text, offsets, window=1, max_chunks=10)

    assert pieces == text.split()


@pytest.mark.parametrize("window", [1, 2, 3, 7])
def test_every_window_respects_the_window_size(window: int) -> None:
    text = " ".join(f"w{i}" for i in range(20))

    pieces, sizes, total = windows_from_offsets(text, word_offsets(text), window=window, max_chunks=100)

    assert all(size <= window for size in sizes)
    assert [len(p.split()) for p in pieces] == sizes
    assert sum(sizes) == 20
    assert total == -(-20 // window)
    assert " ".join(pieces) == text  # nothing lost, nothing repeated


def test_past_max_chunks_windows_are_picked_evenly_and_the_total_is_reported() -> None:
    text = " ".join(f"w{i}" for i in range(10))

    pieces, sizes, total = windows_from_offsets(text, word_offsets(text), window=1, max_chunks=4)

    assert pieces == ["w0", "w3", "w6", "w9"]  # first and last kept, evenly spaced between
    assert sizes == [1, 1, 1, 1]
    assert total == 10


def test_max_chunks_of_one_keeps_the_first_window() -> None:
    text = "a b c d e f"

    pieces, _, total = windows_from_offsets(text, word_offsets(text), window=2, max_chunks=1)

    assert (pieces, total) == (["a b"], 3)


@pytest.mark.parametrize(("n_windows", "max_chunks"), [(5, 4), (17, 16), (100, 16), (33, 2)])
def test_picked_windows_are_distinct_and_exactly_max_chunks(n_windows: int, max_chunks: int) -> None:
    text = " ".join(f"w{i}" for i in range(n_windows))

    pieces, _, total = windows_from_offsets(text, word_offsets(text), window=1, max_chunks=max_chunks)

    assert len(pieces) == len(set(pieces)) == max_chunks
    assert (pieces[0], pieces[-1], total) == ("w0", f"w{n_windows - 1}", n_windows)


def test_plan_tokenizes_only_texts_that_may_exceed_the_window() -> None:
    tokenizer = RecordingTokenizer()
    long_text = "one two three four five six"  # 27 characters, 6 tokens
    texts = ["short", long_text, "12"]

    plan = plan_chunks(texts, tokenizer, window=10, max_chunks=8)

    # At most 4 tokens per character: "12" (2 characters) cannot pass 10 tokens, "short" (5) might.
    assert tokenizer.calls == [["short", long_text]]
    assert plan.chunks == texts  # 6 tokens fit a window of 10
    assert plan.totals == [1, 1, 1]


def test_plan_never_calls_the_tokenizer_when_no_text_is_long() -> None:
    tokenizer = RecordingTokenizer()

    plan = plan_chunks(["a", "bb", "ccc"], tokenizer, window=12, max_chunks=2)

    assert tokenizer.calls == []
    assert plan == ChunkPlan(
        chunks=["a", "bb", "ccc"], owners=[0, 1, 2], weights=[1.0, 1.0, 1.0], totals=[1, 1, 1], used=[1, 1, 1]
    )


def test_plan_splits_long_texts_and_weights_windows_by_tokens() -> None:
    long_text = "a b c d e f g h i j"  # 10 tokens -> windows of 4, 4, 2

    plan = plan_chunks(["first", long_text, "last"], RecordingTokenizer(), window=4, max_chunks=8)

    assert plan.chunks == ["first", "a b c d", "e f g h", "i j", "last"]
    assert plan.owners == [0, 1, 1, 1, 2]
    assert plan.weights == pytest.approx([1.0, 0.4, 0.4, 0.2, 1.0])
    assert plan.totals == [1, 3, 1]
    assert plan.used == [1, 3, 1]


def test_plan_reports_windows_used_and_needed_past_max_chunks() -> None:
    long_text = " ".join(f"w{i}" for i in range(12))  # 12 windows of 1

    plan = plan_chunks([long_text], RecordingTokenizer(), window=1, max_chunks=3)

    assert plan.chunks == ["w0", "w6", "w11"]  # linspace(0, 11, 3) -> 0, 5.5, 11, rounded half to even -> 6
    assert (plan.totals, plan.used) == ([12], [3])
    assert sum(plan.weights) == pytest.approx(1.0)


def test_plan_of_no_texts_is_empty() -> None:
    tokenizer = RecordingTokenizer()

    assert plan_chunks([], tokenizer, window=4, max_chunks=2) == ChunkPlan([], [], [], [], [])
    assert tokenizer.calls == []


def test_a_short_text_with_more_tokens_than_the_window_is_still_split() -> None:
    def two_tokens_per_character(texts: list[str]) -> list[list[tuple[int, int]]]:
        return [[(i, i + 1) for i in range(len(t)) for _ in range(2)] for t in texts]

    plan = plan_chunks(["가" * 8], two_tokens_per_character, window=8, max_chunks=8)  # 8 characters, 16 tokens

    assert plan.totals == [2]


def test_pooling_is_the_token_weighted_mean_normalized() -> None:
    plan = ChunkPlan(chunks=["a1", "a2", "b"], owners=[0, 0, 1], weights=[0.75, 0.25, 1.0], totals=[2, 1], used=[2, 1])
    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]], dtype=np.float32)

    pooled = pool_chunks(vectors, plan)

    expected_a = np.array([0.75, 0.25]) / np.hypot(0.75, 0.25)
    assert pooled.dtype == np.float32
    assert pooled.shape == (2, 2)
    np.testing.assert_allclose(pooled[0], expected_a, rtol=1e-6)
    np.testing.assert_allclose(pooled[1], [0.6, 0.8], rtol=1e-6)


def test_pooled_vectors_are_unit_length() -> None:
    rng = np.random.default_rng(0)
    texts = ["short", " ".join(f"w{i}" for i in range(9)), "also short", "x y z"]
    plan = plan_chunks(texts, RecordingTokenizer(), window=2, max_chunks=3)
    vectors = rng.normal(size=(len(plan.chunks), 8)).astype(np.float32)

    pooled = pool_chunks(vectors, plan)

    assert pooled.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=1), 1.0, rtol=1e-6)


def test_pooling_single_chunk_texts_only_normalizes_them() -> None:
    plan = plan_chunks(["a", "b"], RecordingTokenizer(), window=4, max_chunks=2)
    vectors = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, -5.0]], dtype=np.float32)

    np.testing.assert_allclose(pool_chunks(vectors, plan), [[1, 0, 0], [0, 0, -1]])


def test_pooling_a_zero_vector_gives_zeros_not_nan() -> None:
    plan = ChunkPlan(chunks=["a"], owners=[0], weights=[1.0], totals=[1], used=[1])

    pooled = pool_chunks(np.zeros((1, 3), dtype=np.float32), plan)

    assert not np.isnan(pooled).any()
    np.testing.assert_array_equal(pooled, [[0, 0, 0]])
