"""Split texts longer than the model's window into windows, and pool the windows' vectors back into one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MAX_TOKENS_PER_CHAR = 4

# Each text's (start, end) character offsets per token, from a fast tokenizer, without special tokens.
TokenizeOffsets = Callable[[list[str]], list[list[tuple[int, int]]]]


@dataclass(frozen=True)
class ChunkPlan:
    """Which chunk texts to encode, and which input text each belongs to.

    Attributes:
        chunks: texts to encode, in order.
        owners: for each chunk, the index of its input text.
        weights: for each chunk, its share of tokens (windows of a text are weighted by length).
        totals: for each input text, how many windows it needed.
        used: for each input text, how many windows were encoded (fewer than `totals` only past `max_chunks`).
    """

    chunks: list[str]
    owners: list[int]
    weights: list[float]
    totals: list[int]
    used: list[int]


def windows_from_offsets(
    text: str, offsets: Sequence[tuple[int, int]], window: int, max_chunks: int
) -> tuple[list[str], list[int], int]:
    """Cut `text` at token boundaries into pieces of at most `window` tokens.

    Args:
        text: the input text.
        offsets: (start, end) character offsets of each token, from a fast tokenizer.
        window: tokens per piece (the model's max length less its special tokens).
        max_chunks: most pieces kept; past it, pieces are taken evenly across the text.

    Returns:
        The pieces, their token counts, and how many pieces the whole text needed.
    """
    if len(offsets) <= window:
        return [text], [max(len(offsets), 1)], 1
    starts = list(range(0, len(offsets), window))
    total = len(starts)
    if total > max_chunks:
        keep = np.linspace(0, total - 1, max_chunks).round().astype(int)
        starts = [starts[i] for i in sorted(set(keep.tolist()))]
    pieces, sizes = [], []
    for start in starts:
        span = offsets[start : start + window]
        pieces.append(text[span[0][0] : span[-1][1]])
        sizes.append(len(span))
    return pieces, sizes, total


def plan_chunks(
    texts: Sequence[str],
    tokenize_offsets: TokenizeOffsets,
    window: int,
    max_chunks: int,
) -> ChunkPlan:
    """Plan the chunks for a batch; only texts that may exceed the window are tokenized here.

    One character yields at most `MAX_TOKENS_PER_CHAR` tokens (a Hangul syllable is up to 3 WordPiece jamo,
    a 4-byte character up to 4 byte-level BPE tokens), so a text of at most `window / 4` characters fits.
    """
    long_idx = [i for i, t in enumerate(texts) if len(t) * MAX_TOKENS_PER_CHAR > window]
    offsets = tokenize_offsets([texts[i] for i in long_idx]) if long_idx else []
    long_offsets = dict(zip(long_idx, offsets, strict=True))
    plan = ChunkPlan(chunks=[], owners=[], weights=[], totals=[], used=[])
    for i, text in enumerate(texts):
        if i in long_offsets:
            pieces, sizes, total = windows_from_offsets(text, long_offsets[i], window, max_chunks)
        else:
            pieces, sizes, total = [text], [1], 1
        plan.chunks.extend(pieces)
        plan.owners.extend([i] * len(pieces))
        plan.weights.extend(s / sum(sizes) for s in sizes)
        plan.totals.append(total)
        plan.used.append(len(pieces))
    return plan


def pool_chunks(vectors: NDArray[np.float32], plan: ChunkPlan) -> NDArray[np.float32]:
    """Weighted mean of each text's chunk vectors, L2-normalized.

    Args:
        vectors: (n_chunks, dims) chunk embeddings, in `plan.chunks` order.
        plan: the plan the chunks came from.

    Returns:
        (n_texts, dims) unit vectors.
    """
    n_texts = len(plan.totals)
    pooled = np.zeros((n_texts, vectors.shape[1]), dtype=np.float64)
    np.add.at(pooled, np.asarray(plan.owners), vectors.astype(np.float64) * np.asarray(plan.weights)[:, None])
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
