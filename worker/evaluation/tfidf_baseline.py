"""A TF-IDF + logistic regression baseline, scored like the tagger (same thresholds rule, same metrics)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from worker.pipeline.tag_fit import choose_thresholds
from worker.pipeline.taxonomy import Taxonomy

if TYPE_CHECKING:
    from worker.evaluation.tagging import Labelled


def tfidf_baseline(train: Labelled, test: Labelled, taxonomy: Taxonomy, *, seed: int = 0) -> dict[str, float]:
    """Word 1-2 gram TF-IDF; softmax LR for a single-label facet, one LR per tag otherwise; facets alone."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from worker.evaluation.tagging import f1_scores

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vectorizer.fit_transform(train.texts)
    x_test = vectorizer.transform(test.texts)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train.texts))
    holdout, fit_rows = order[: len(order) // 5], order[len(order) // 5 :]
    predicted: list[set[str]] = [set() for _ in test.texts]
    hits = 0
    for facet in taxonomy.facets:
        names = [t.name for t in facet.tags]
        gold = np.array([[n in tags for n in names] for tags in train.tags], dtype=np.float32)
        rows = np.flatnonzero(gold.sum(axis=1) > 0)
        train_rows = np.intersect1d(fit_rows, rows)
        probe = _fit(x_train[train_rows], gold[train_rows], facet.multi_label)
        held = np.intersect1d(holdout, rows)
        thresholds = choose_thresholds(
            probe(x_train[held]), gold[held], facet.multi_label, np.full(len(names), 0.5, dtype=np.float32)
        )
        scores = _fit(x_train[rows], gold[rows], facet.multi_label)(x_test)
        for i, row in enumerate(scores):
            picked = np.flatnonzero(row >= thresholds) if facet.multi_label else [int(row.argmax())]
            predicted[i] |= {names[j] for j in picked if row[j] >= thresholds[j]}
            hits += test.tags[i][0] in names and names[int(row.argmax())] == test.tags[i][0]
    truth = [set(tags) & set(taxonomy.tag_names) for tags in test.tags]
    micro, macro = f1_scores(predicted, truth)
    return {
        "accuracy": round(100 * hits / len(test.texts), 2),
        "micro_f1": round(100 * micro, 2),
        "macro_f1": round(100 * macro, 2),
    }


def _fit(x, gold, multi_label: bool):  # type: ignore[no-untyped-def]
    """Returns a function from features to (n, n_tags) scores."""
    from sklearn.linear_model import LogisticRegression

    if not multi_label:
        model = LogisticRegression(C=10, max_iter=2000).fit(x, gold.argmax(axis=1))

        def softmax_scores(features):  # type: ignore[no-untyped-def]
            out = np.zeros((features.shape[0], gold.shape[1]), dtype=np.float32)
            out[:, model.classes_] = model.predict_proba(features)
            return out

        return softmax_scores
    models = [
        LogisticRegression(C=10, max_iter=2000).fit(x, gold[:, j]) if 0 < gold[:, j].sum() < len(gold) else None
        for j in range(gold.shape[1])
    ]

    def ovr_scores(features):  # type: ignore[no-untyped-def]
        columns = [m.predict_proba(features)[:, 1] if m else np.zeros(features.shape[0]) for m in models]
        return np.stack(columns, axis=1).astype(np.float32)

    return ovr_scores
