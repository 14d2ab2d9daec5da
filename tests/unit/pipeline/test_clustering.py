"""Clustering stages on synthetic vectors: themes found, noise, assignment, identity across runs, keywords."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from worker.pipeline.cluster import (
    NOISE,
    ClusterParams,
    assign,
    cluster_vectors,
    members_result,
    merge_by_silhouette,
    neighbour_vote,
    unit_rows,
    without_small_themes,
)
from worker.pipeline.cluster_labels import ctfidf_keywords, representatives, short_label
from worker.pipeline.cluster_match import match_clusters


def blobs(n_per: int, k: int, dims: int = 32, spread: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(k, dims)))
    labels = np.repeat(np.arange(k), n_per)
    return unit_rows(centres[labels] + rng.normal(scale=spread, size=(len(labels), dims))), labels


def test_finds_the_themes_without_being_told_how_many() -> None:
    vectors, truth = blobs(40, 5)
    result = cluster_vectors(vectors, ClusterParams(dims=10, min_cluster_size=8))
    assert result.n_clusters == 5
    for theme in range(5):
        assert len(set(result.labels[truth == theme])) == 1


def test_far_away_items_are_noise_and_too_few_items_are_all_noise() -> None:
    vectors, _ = blobs(40, 3)
    outlier = unit_rows(np.random.default_rng(9).normal(size=(1, 32)))
    result = cluster_vectors(np.vstack([vectors, outlier]), ClusterParams(dims=10, min_cluster_size=8))
    assert result.labels[-1] == NOISE
    assert cluster_vectors(vectors[:3], ClusterParams(min_cluster_size=8)).n_clusters == 0


def test_silhouette_merge_joins_halves_of_a_theme_and_keeps_themes_apart() -> None:
    vectors, truth = blobs(30, 3)
    halves = truth * 2 + np.arange(len(truth)) % 2  # each theme cut in two interleaved pieces
    links = np.zeros((6, 6))
    np.add.at(links, (halves[:-1], halves[1:]), 1)  # neighbours within a theme: the pieces touch
    links += links.T
    everyone = np.arange(len(vectors))
    assert merge_by_silhouette(vectors, halves, links, everyone).tolist() == [0, 0, 1, 1, 2, 2]
    # Whole themes stay apart, even when links would join them first.
    assert merge_by_silhouette(vectors, truth, np.ones((3, 3)), everyone).tolist() == [0, 1, 2]


def test_an_item_takes_the_theme_of_most_of_its_neighbours() -> None:
    # A chain 0-1-2-3-4 (each item's neighbours: itself and the items beside it); items 1 and 2 disagree with theirs.
    labels = np.array([0, 1, 0, 1, 1])
    nearest = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 3], [3, 2, 4], [4, 3, 3]])
    assert neighbour_vote(labels, nearest, rounds=1).tolist() == [0, 0, 1, 1, 1]
    assert neighbour_vote(labels, nearest, rounds=5).tolist() == [0, 0, 1, 1, 1]  # settled: more rounds change nothing
    tie = neighbour_vote(np.array([2, 1]), np.array([[0, 1], [1, 0]]), rounds=1)
    assert tie.tolist() == [1, 1]  # a tie goes to the lower theme


def test_the_vote_returns_stray_items_to_the_theme_around_them() -> None:
    vectors, truth = blobs(40, 4, spread=0.08)
    strays = np.random.default_rng(1).choice(len(truth), 16, replace=False)
    labels = truth.copy()
    labels[strays] = (truth[strays] + 1) % 4  # as a centroid cut through a theme's fringe would leave them
    nearest = np.argsort(-(vectors @ vectors.T), axis=1)[:, :10]  # itself first

    assert neighbour_vote(labels, nearest, rounds=5).tolist() == truth.tolist()


def test_members_make_the_centroids_and_noise_follows_the_live_rule() -> None:
    vectors = unit_rows(np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 0, 1], [0.9, 0, 0.5]], dtype=np.float32))
    result = members_result(vectors, np.array([3, 3, 5, 5, 5]), threshold=0.8)
    # Theme 5's centroid is far from its first two members and from theme 3: they are noise, as live items
    # would be. Its third member is near theme 3's centroid, so it is no noise and keeps its theme.
    assert result.labels.tolist() == [0, 0, NOISE, NOISE, 1]
    assert result.n_clusters == 2
    assert np.allclose(result.centroids[0], unit_rows(vectors[:2].sum(axis=0, keepdims=True))[0])
    assert result.similarity[4] == np.float32(vectors[4] @ result.centroids[1])  # to its own theme


def test_a_theme_left_without_members_is_dropped() -> None:
    vectors = unit_rows(np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32))
    result = members_result(vectors, np.array([0, 0, 1, 1]), threshold=0.8)
    assert result.labels.tolist() == [0, 0, NOISE, NOISE]
    assert result.n_clusters == 1


def test_the_vote_and_the_members_refuse_noise_and_accept_nothing() -> None:
    with pytest.raises(ValueError, match="mark noise afterwards"):
        neighbour_vote(np.array([NOISE, 0]), np.array([[0, 1], [1, 0]]), rounds=1)
    with pytest.raises(ValueError, match="marks the noise itself"):
        members_result(np.eye(2, dtype=np.float32), np.array([NOISE, 0]), threshold=0.3)
    empty = np.zeros(0, dtype=np.int64)
    assert neighbour_vote(empty, np.zeros((0, 3), dtype=np.int64), rounds=2).tolist() == []
    assert members_result(np.zeros((0, 4), dtype=np.float32), empty, threshold=0.3).n_clusters == 0


def test_items_past_the_fitted_sample_join_the_themes_too() -> None:
    vectors, truth = blobs(60, 4)
    result = cluster_vectors(vectors, ClusterParams(dims=10, min_cluster_size=8, max_fit_items=120))
    assert result.n_clusters == 4
    for theme in range(4):
        assert len(set(result.labels[truth == theme])) == 1


def test_assign_uses_the_threshold() -> None:
    centroids = unit_rows(np.eye(4, dtype=np.float32))
    result = assign(unit_rows(np.array([[1, 0.1, 0, 0], [0, 0, 0, 0.2]], dtype=np.float32) + 1e-9), centroids, 0.5)
    assert result.labels.tolist() == [0, 3]
    assert assign(unit_rows(np.array([[1, 1, 1, 1]], dtype=np.float32)), centroids, 0.9).labels.tolist() == [NOISE]


def test_matching_keeps_ids_and_records_splits_merges_new_and_retired() -> None:
    old_ids = [10, 20, 30]
    old_centroids = unit_rows(np.eye(3, 8, dtype=np.float32))
    # Items of theme 10 stay together; theme 20 splits in two; theme 30 disappears; one new theme appears.
    old_labels: list[int | None] = [10] * 6 + [20] * 6 + [30] * 4 + [None] * 5
    new_labels = np.array([0] * 6 + [1] * 3 + [2] * 3 + [NOISE] * 4 + [3] * 5)
    new_centroids = unit_rows(np.eye(4, 8, dtype=np.float32))
    match = match_clusters(new_labels=new_labels, old_labels=old_labels, new_centroids=new_centroids,
                           old_ids=old_ids, old_centroids=old_centroids)  # fmt: skip
    assert match.keeps[0] == 10
    assert sorted(map(str, match.keeps[1:3])) == ["20", "None"]  # one half of the split keeps the id
    assert match.keeps[3] is None
    events = {(j, e) for j, e, _ in match.events}
    assert (3, "new") in events
    assert any(e == "split" for _, e, _ in match.events)
    assert [old for old, _ in match.retired] == [30]


def test_ctfidf_keywords_prefer_words_distinctive_of_a_cluster() -> None:
    texts = ["emails land in spam", "spam folder again", "refund my invoice", "invoice charged twice"]
    keywords = ctfidf_keywords(texts, np.array([0, 0, 1, 1]), 2)
    assert keywords[0][0] == "spam" and keywords[1][0] == "invoice"
    assert short_label(["invoice", "invoice charged", "refund", "twice"], "x") == "invoice / refund / twice"
    assert short_label([], "theme 3") == "theme 3"


def test_representatives_are_closest_to_the_centre() -> None:
    vectors, truth = blobs(10, 2)
    centroids = unit_rows(np.stack([vectors[truth == c].mean(axis=0) for c in range(2)]))
    reps = representatives(vectors, truth, centroids, per_cluster=3)
    assert all(truth[r] == c for c in range(2) for r in reps[c]) and len(reps[0]) == 3


def test_themes_of_another_model_version_continue_by_members_only() -> None:
    """Their centroids are in another model's space: a similar-looking centroid there must not claim them."""
    old_labels: list[int | None] = [7] * 5 + [None] * 5
    new_labels = np.array([0] * 5 + [1] * 5)
    new_centroids = unit_rows(np.eye(2, 8, dtype=np.float32))
    own = unit_rows(np.eye(1, 8, 1, dtype=np.float32))  # theme 3 of this version, the same direction as cluster 1
    match = match_clusters(new_labels=new_labels, old_labels=old_labels, new_centroids=new_centroids,
                           old_ids=[3, 7, 9], old_centroids=own)  # fmt: skip
    assert match.keeps == [7, 3]  # 7 by its members, 3 by its centroid
    assert [old for old, _ in match.retired] == [9]  # another version's theme nobody continues is retired


def test_a_retired_theme_items_still_point_at_is_never_revived() -> None:
    """Live assignment could write a theme a run had just retired; the next run gave that id back to a cluster."""
    old_labels: list[int | None] = [2] * 10 + [1] * 5
    new_labels = np.array([0] * 10 + [1] * 5)
    new_centroids = unit_rows(np.eye(2, 8, dtype=np.float32))
    match = match_clusters(new_labels=new_labels, old_labels=old_labels, new_centroids=new_centroids,
                           old_ids=[1], old_centroids=unit_rows(np.eye(1, 8, 1, dtype=np.float32)))  # fmt: skip
    assert match.keeps == [None, 1]
    assert all(2 not in related for _, _, related in match.events)


def test_no_theme_is_left_with_a_handful_of_items() -> None:
    """The k-means steps, the vote and the noise rule used to leave a 3-item theme when min_cluster_size was 8."""
    vectors, _ = blobs(600, 1, spread=0.3)  # one diffuse cloud: HDBSCAN finds many small pieces in it
    params = ClusterParams(dims=10, min_cluster_size=8)
    result = cluster_vectors(vectors, params)
    sizes = np.bincount(result.labels[result.labels >= 0], minlength=result.n_clusters)
    assert result.n_clusters >= 1 and sizes.min() >= params.min_cluster_size * params.min_theme_share, sizes


def test_one_tight_theme_stays_one_theme_without_warnings() -> None:
    """The silhouette merge never goes below two, but one theme's pieces are joined before it (no forced split)."""
    vectors, _ = blobs(300, 1, dims=384, spread=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the silhouette of a single piece used to divide 0 by 0
        result = cluster_vectors(vectors, ClusterParams())
    assert result.n_clusters == 1 and result.noise_share == 0.0


def test_identical_items_are_no_theme_rather_than_a_crash() -> None:
    """HDBSCAN finds no cluster among copies of one text; the run records that as skipped (clean, nothing written)."""
    vectors = np.repeat(unit_rows(np.random.default_rng(3).normal(size=(1, 32))), 100, axis=0)
    result = cluster_vectors(vectors, ClusterParams(dims=10, min_cluster_size=8))
    assert result.n_clusters == 0 and result.noise_share == 1.0


def test_when_no_theme_keeps_enough_members_everything_is_noise() -> None:
    vectors = unit_rows(np.array([[1, 0, 0], [1, 0.1, 0], [0, 1, 0], [0, 1, 0.1]], dtype=np.float32))
    result = without_small_themes(vectors, np.array([0, 0, 1, 1]), min_size=3, threshold=0.3)
    assert result.labels.tolist() == [NOISE] * 4 and result.n_clusters == 0
