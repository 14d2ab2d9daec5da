"""Describe clusters: class-based TF-IDF keywords (as BERTopic does), a short label, representative items."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def ctfidf_keywords(texts: list[str], labels: NDArray[np.int64], n_clusters: int, top: int = 8) -> list[list[str]]:
    """Per cluster, the words that are frequent in it and rare in the others.

    c-TF-IDF: term frequency within the cluster (all its texts as one document), L1-normalized, times
    log(1 + average words per cluster / frequency of the term over all clusters).
    """
    from sklearn.feature_extraction.text import CountVectorizer

    documents = [" ".join(texts[i] for i in np.flatnonzero(labels == c)) for c in range(n_clusters)]
    if not any(documents):
        return [[] for _ in range(n_clusters)]
    try:
        vectorizer = CountVectorizer(stop_words="english", ngram_range=(1, 2), min_df=1, max_features=50_000)
        counts = vectorizer.fit_transform(documents).toarray().astype(np.float64)
    except ValueError:  # only stop words
        return [[] for _ in range(n_clusters)]
    words = vectorizer.get_feature_names_out()
    tf = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    average_words = counts.sum() / max(n_clusters, 1)
    idf = np.log(1 + average_words / np.maximum(counts.sum(axis=0), 1))
    scores = tf * idf
    return [[str(words[j]) for j in np.argsort(-row)[:top] if row[j] > 0] for row in scores]


def short_label(keywords: list[str], fallback: str) -> str:
    """The top three keywords, skipping ones contained in a higher-ranked keyword."""
    picked: list[str] = []
    for word in keywords:
        if not any(word in p or p in word for p in picked):
            picked.append(word)
        if len(picked) == 3:
            break
    return " / ".join(picked) if picked else fallback


def representatives(
    vectors: NDArray[np.float32], labels: NDArray[np.int64], centroids: NDArray[np.float32], per_cluster: int = 5
) -> list[list[int]]:
    """Row indexes of the items closest to each centroid."""
    result: list[list[int]] = []
    for c in range(len(centroids)):
        rows = np.flatnonzero(labels == c)
        if rows.size == 0:
            result.append([])
            continue
        closest = rows[np.argsort(-(vectors[rows] @ centroids[c]))[:per_cluster]]
        result.append([int(r) for r in closest])
    return result
