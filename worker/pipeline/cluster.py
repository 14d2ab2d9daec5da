"""Feedback clustering: reduce, HDBSCAN, merge near-duplicate clusters, refine, mark what fits no theme as noise.

Why these stages:
- Neighbour smoothing: each point moves to the mean of its k nearest neighbours, which sharpens dense regions
  before HDBSCAN reads them.
- PCA to 30 dimensions: linear, deterministic, seconds at this scale. HDBSCAN's density estimates break down in
  384 dimensions, and UMAP would add numba and minutes.
- HDBSCAN on at most `max_fit_items` points finds how many themes there are; the rest are assigned afterwards,
  which keeps the cost linear in the number of items.
- Clusters whose centroids are nearly identical are merged; then a few spherical k-means steps over all items
  polish the boundaries (k stays what HDBSCAN found). Items below `noise_similarity` to every centroid are noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

NOISE = -1


@dataclass(frozen=True)
class ClusterParams:
    """Knobs of a clustering run (tuned on a Banking77 train sample, not on the test split)."""

    dims: int = 30
    smoothing_k: int = 10
    min_cluster_size: int = 12
    min_samples: int = 1
    merge_similarity: float = 0.9
    refine_iterations: int = 5
    noise_similarity: float = 0.3
    max_fit_items: int = 20_000
    seed: int = 0


@dataclass(frozen=True)
class ClusterResult:
    """labels: (n,) cluster index or -1; centroids: (k, dims) unit vectors; similarity: (n,) to own centroid."""

    labels: NDArray[np.int64]
    centroids: NDArray[np.float32]
    similarity: NDArray[np.float32]

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    @property
    def noise_share(self) -> float:
        return float((self.labels == NOISE).mean()) if len(self.labels) else 0.0


def unit_rows(matrix: NDArray[np.floating]) -> NDArray[np.float32]:
    return (matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def cluster_vectors(vectors: NDArray[np.float32], params: ClusterParams = ClusterParams()) -> ClusterResult:
    """Cluster (n, dims) unit vectors. Returns all-noise when HDBSCAN finds no cluster."""
    rng = np.random.default_rng(params.seed)
    fit_rows = np.sort(rng.choice(len(vectors), min(len(vectors), params.max_fit_items), replace=False))
    smoothed = _smooth(vectors[fit_rows], params.smoothing_k)
    found = _hdbscan(_reduce(smoothed, params), params)
    if found.max(initial=NOISE) == NOISE:
        return ClusterResult(np.full(len(vectors), NOISE), np.zeros((0, vectors.shape[1]), np.float32),
                             np.zeros(len(vectors), np.float32))  # fmt: skip
    centroids = _centroids(smoothed, found)
    centroids = _merge(centroids, params.merge_similarity)
    return assign(vectors, _refine(vectors, centroids, params.refine_iterations), params.noise_similarity)


def assign(vectors: NDArray[np.float32], centroids: NDArray[np.float32], threshold: float) -> ClusterResult:
    """Each vector to its most similar centroid, or noise below `threshold` (also what new items get)."""
    if len(centroids) == 0 or len(vectors) == 0:
        return ClusterResult(np.full(len(vectors), NOISE), centroids, np.zeros(len(vectors), np.float32))
    labels = np.empty(len(vectors), dtype=np.int64)
    similarity = np.empty(len(vectors), dtype=np.float32)
    for start in range(0, len(vectors), 8192):
        scores = vectors[start : start + 8192] @ centroids.T
        labels[start : start + 8192] = scores.argmax(axis=1)
        similarity[start : start + 8192] = scores.max(axis=1)
    labels[similarity < threshold] = NOISE
    return ClusterResult(labels, centroids, similarity)


def _reduce(vectors: NDArray[np.float32], params: ClusterParams) -> NDArray[np.float32]:
    from sklearn.decomposition import PCA

    dims = max(1, min(params.dims, len(vectors) - 1, vectors.shape[1]))
    return unit_rows(PCA(n_components=dims, random_state=params.seed).fit_transform(vectors))


def _smooth(points: NDArray[np.float32], k: int) -> NDArray[np.float32]:
    """Each point replaced by the mean of its k nearest neighbours (itself included), chunked to bound memory."""
    k = min(k, len(points))
    if k <= 1:
        return points
    out = np.empty_like(points)
    for start in range(0, len(points), 2048):
        scores = points[start : start + 2048] @ points.T
        nearest = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out[start : start + 2048] = points[nearest].mean(axis=1)
    return unit_rows(out)


def _hdbscan(points: NDArray[np.float32], params: ClusterParams) -> NDArray[np.int64]:
    import hdbscan

    if len(points) < max(params.min_cluster_size, 2):
        return np.full(len(points), NOISE)
    model = hdbscan.HDBSCAN(
        min_cluster_size=params.min_cluster_size, min_samples=params.min_samples, core_dist_n_jobs=1
    )
    return model.fit_predict(points.astype(np.float64)).astype(np.int64)


def _centroids(vectors: NDArray[np.float32], labels: NDArray[np.int64]) -> NDArray[np.float32]:
    ids = np.unique(labels[labels != NOISE])
    return unit_rows(np.stack([vectors[labels == c].mean(axis=0) for c in ids]))


def _merge(centroids: NDArray[np.float32], threshold: float) -> NDArray[np.float32]:
    """Union clusters whose centroids are at least `threshold` similar; returns the merged centroids."""
    parent = list(range(len(centroids)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    similar = np.triu(centroids @ centroids.T, 1) >= threshold
    for i, j in zip(*np.nonzero(similar), strict=True):
        parent[root(int(i))] = root(int(j))
    groups: dict[int, list[int]] = {}
    for i in range(len(centroids)):
        groups.setdefault(root(i), []).append(i)
    return unit_rows(np.stack([centroids[g].mean(axis=0) for g in groups.values()]))


def _refine(vectors: NDArray[np.float32], centroids: NDArray[np.float32], iterations: int) -> NDArray[np.float32]:
    """Spherical k-means steps from the given centroids; a centroid that loses every item keeps its place."""
    from scipy import sparse

    for _ in range(iterations):
        labels = assign(vectors, centroids, -1.0).labels
        members = sparse.csr_matrix(
            (np.ones(len(labels), dtype=np.float32), (labels, np.arange(len(labels)))),
            shape=(len(centroids), len(labels)),
        )
        sums = np.asarray(members @ vectors)
        counts = np.bincount(labels, minlength=len(centroids))
        centroids = np.where(counts[:, None] > 0, unit_rows(sums), centroids).astype(np.float32)
    return centroids
