"""Keep theme ids across runs: match a run's clusters to the previous ones by shared members and centroids."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

CONTINUE_OVERLAP = 0.5  # share of a new cluster's items that were in one old cluster
CONTINUE_SIMILARITY = 0.9  # centroid similarity that counts as the same theme when members changed
MERGE_OVERLAP = 0.3  # share of an old cluster's items that moved into one new cluster


@dataclass(frozen=True)
class Match:
    """For each new cluster index: the old id it keeps (or None for a new theme), and lineage events."""

    keeps: list[int | None]
    events: list[tuple[int, str, list[int]]] = field(default_factory=list)  # (new index, event, old ids)
    retired: list[tuple[int, list[int]]] = field(default_factory=list)  # (old id, new indexes it went to)


def match_clusters(
    *,
    new_labels: NDArray[np.int64],
    old_labels: list[int | None],
    new_centroids: NDArray[np.float32],
    old_ids: list[int],
    old_centroids: NDArray[np.float32],
) -> Match:
    """Match a run's clusters to the themes before it.

    Args:
        new_labels: (n,) cluster index of each item, or -1.
        old_labels: (n,) each item's previous theme id, or None; ids not in `old_ids` count as None.
        new_centroids: (k, dims) the run's centroids.
        old_ids: the themes that may continue: the version's own first, then any of other model versions.
        old_centroids: (m, dims) centroids of the first m `old_ids`. The rest live in another model's space, so
            they continue by shared members only, never by centroid similarity.
    """
    k = len(new_centroids)
    # An item may still point at a theme retired before (live assignment raced that run): never revive it.
    known = set(old_ids)
    overlap, old_sizes = _count_overlap(new_labels, [old if old in known else None for old in old_labels])
    new_sizes = np.bincount(new_labels[new_labels >= 0], minlength=k)
    similarity = np.full((k, len(old_ids)), -1.0)
    if len(old_centroids) and k:
        similarity[:, : len(old_centroids)] = new_centroids @ old_centroids.T
    claims = _claims(overlap, new_sizes, similarity, old_ids)
    keeps, events = _lineage(claims, overlap, old_sizes, k)
    kept = {old for old in keeps if old is not None}
    retired = [(old, sorted({new for (new, o) in overlap if o == old})) for old in old_ids if old not in kept]
    return Match(keeps, events, retired)


def _count_overlap(
    new_labels: NDArray[np.int64], old_labels: list[int | None]
) -> tuple[dict[tuple[int, int], int], dict[int, int]]:
    """Items each (new cluster index, old id) shares, and each old theme's size among these items."""
    overlap: dict[tuple[int, int], int] = {}
    old_sizes: dict[int, int] = {}
    for new, old in zip(new_labels.tolist(), old_labels, strict=True):
        if old is not None:
            old_sizes[old] = old_sizes.get(old, 0) + 1
            if new >= 0:
                overlap[(new, old)] = overlap.get((new, old), 0) + 1
    return overlap, old_sizes


def _claims(
    overlap: dict[tuple[int, int], int],
    new_sizes: NDArray[np.int64],
    similarity: NDArray[np.float64],
    old_ids: list[int],
) -> dict[int, list[tuple[float, int]]]:
    """For each old id, the new clusters that would continue it and how strongly (shared members, else centroids)."""
    claims: dict[int, list[tuple[float, int]]] = {}
    for j in range(len(similarity)):  # similarity: (k, len(old_ids))
        candidates = [(count / max(new_sizes[j], 1), old) for (new, old), count in overlap.items() if new == j]
        best = max(candidates, default=None)
        if best is not None and best[0] >= CONTINUE_OVERLAP:
            claims.setdefault(best[1], []).append((best[0], j))
        elif len(old_ids) and similarity[j].max() >= CONTINUE_SIMILARITY:
            claims.setdefault(old_ids[int(similarity[j].argmax())], []).append((float(similarity[j].max()), j))
    return claims


def _lineage(
    claims: dict[int, list[tuple[float, int]]], overlap: dict[tuple[int, int], int], old_sizes: dict[int, int], k: int
) -> tuple[list[int | None], list[tuple[int, str, list[int]]]]:
    """Which new cluster keeps each claimed old id (the strongest claimant; the others split off), and the events."""
    keeps: list[int | None] = [None] * k
    events: list[tuple[int, str, list[int]]] = []
    for old, claimants in claims.items():
        claimants.sort(reverse=True)
        keeps[claimants[0][1]] = old
        for _, j in claimants[1:]:
            events.append((j, "split", [old]))
    for j in range(k):
        merged_from = [
            old for (new, old), count in overlap.items()
            if new == j and old != keeps[j] and count >= MERGE_OVERLAP * old_sizes[old] and old not in claims
        ]  # fmt: skip
        if merged_from:
            events.append((j, "merged", sorted(merged_from)))
        if keeps[j] is not None:
            events.append((j, "continued", [keeps[j]]))  # type: ignore[list-item]
        elif not any(e[0] == j for e in events):
            events.append((j, "new", []))
    return keeps, events
