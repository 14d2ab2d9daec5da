"""`tagworker eval clustering` and `tagworker bench clustering`: the worker's clustering code path, scored."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from worker.errors import ConfigurationError
from worker.evaluation.tagging import embed_all
from worker.jsonl import json_lines
from worker.pipeline.cluster import NOISE, ClusterParams, assign, cluster_vectors, unit_rows
from worker.pipeline.embed import Embedder


def read_groups(path: Path, group_by: str | None) -> tuple[list[str], list[str]]:
    """Texts and gold groups: `group_by` names a field, else the first of `tags`."""
    texts, groups = [], []
    wanted = group_by or "a non-empty `tags`"
    for number, row in json_lines(path, f"a JSON object with `text` and {wanted}"):
        try:
            group = row[group_by] if group_by else row["tags"][0]
            texts.append(str(row["text"]))
        except (KeyError, IndexError, TypeError):
            raise ConfigurationError(f"{path}:{number}: needs `text` and {wanted}") from None
        groups.append(str(group))
    if len(texts) < 2:
        raise ConfigurationError(f"{path} has fewer than two lines")
    return texts, groups


def evaluate_clustering(
    embedder: Embedder, texts: list[str], groups: list[str], params: ClusterParams
) -> dict[str, Any]:
    """Agreement with the gold groups over all items, noise counted as one group of its own (as the product does)."""
    vectors = embed_all(embedder, texts, lambda *_: None, "embed")
    started = time.perf_counter()
    result = cluster_vectors(vectors, params)
    seconds = time.perf_counter() - started
    return {
        **score_partition(groups, result.labels),
        "clusters": result.n_clusters,
        "groups": len(set(groups)),
        "noise_share": round(100 * result.noise_share, 2),
        "items": len(texts),
        "seconds": round(seconds, 2),
        "model": embedder.version_name,
    }


def score_partition(groups: list[str], labels: NDArray[np.int_]) -> dict[str, float]:
    """NMI and ARI, and the two halves of NMI that say how a partition differs from the gold groups.

    `homogeneity` is 100 when every theme holds one group only (a theme mixes groups: lower); `completeness` is
    100 when every group is in one theme (a group cut into several themes: lower). NMI is their harmonic mean.
    Themes finer than the gold groups, such as "quote for pet insurance" and "quote for life insurance" under one
    intent, keep homogeneity high and cost completeness and ARI.
    """
    from sklearn.metrics import adjusted_rand_score, homogeneity_completeness_v_measure

    homogeneity, completeness, nmi = homogeneity_completeness_v_measure(groups, labels)
    return {
        "nmi": round(100 * nmi, 2),
        "ari": round(100 * adjusted_rand_score(groups, labels), 2),
        "homogeneity": round(100 * homogeneity, 2),
        "completeness": round(100 * completeness, 2),
    }


def synthetic_vectors(n: int, dims: int = 384, themes: int = 200, seed: int = 0) -> NDArray[np.float32]:
    """Unit vectors around `themes` random centres with uneven sizes (a stand-in for real feedback)."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.normal(size=(themes, dims)))
    weights = rng.pareto(1.5, themes) + 1
    owner = rng.choice(themes, n, p=weights / weights.sum())
    return unit_rows(centres[owner] + rng.normal(scale=0.06, size=(n, dims)).astype(np.float32))


def bench_clustering(vectors: NDArray[np.float32], params: ClusterParams) -> dict[str, Any]:
    """Seconds and peak memory of a full run's clustering, and the per-item cost of live assignment."""
    started = time.perf_counter()
    result = cluster_vectors(vectors, params)
    seconds = time.perf_counter() - started
    batch = vectors[:64]
    repeats = 200
    t0 = time.perf_counter()
    for _ in range(repeats):
        assign(batch, result.centroids, params.noise_similarity)
    per_item_ms = 1000 * (time.perf_counter() - t0) / (repeats * len(batch))
    return {
        "n": len(vectors),
        "dims": int(vectors.shape[1]),
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "clusters": result.n_clusters,
        "noise_share": round(100 * float((result.labels == NOISE).mean()), 2),
        "assign_ms_per_item": round(per_item_ms, 4),
    }
