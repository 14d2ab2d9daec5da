"""Fit a Tagger: zero-shot heads from tag texts, supervised heads from human labels, thresholds on held-out labels.

A facet becomes supervised once at least two of its tags (one, for a multi-label facet) have `min_examples`
human-labelled items. The tag texts (name, description, examples) stay in the training set as extra examples,
so a tag nobody has labelled yet can still win. Thresholds are chosen per tag on a held-out slice of the human
labels to maximize that tag's F1; tags with too few held-out labels share the facet's best threshold.

A person's removal of a tag (an absent label) teaches a multi-label facet that the item lacks that tag, and
nothing about the facet's other tags: the item is a negative row for that tag's sigmoid, its threshold and its kNN
vote only (a per-tag row mask). A single-label facet learns nothing from an item with no present tag in it: "not
T" gives the softmax no class, so absent labels are ignored there, as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from worker.pipeline.embed import Embedder
from worker.pipeline.tag import FacetHead, Tagger
from worker.pipeline.taxonomy import FacetSpec, Taxonomy, prototype_texts

MIN_HELDOUT_POSITIVES = 3


@dataclass(frozen=True)
class FitParams:
    """Knobs of head fitting; the defaults are what the Banking77 targets were measured with."""

    min_examples: int = 5
    zero_shot_threshold: float = 0.35
    default_threshold: float = 0.25
    regularization_c: float = 30.0
    max_exemplars: int = 20_000
    holdout_share: float = 0.2
    seed: int = 0


@dataclass(frozen=True)
class LabelledSet:
    """Human-labelled items: (m, dims) unit vectors, each item's tags (any facet) and the tags it has not.

    `absent` is empty (no absent labels) or one set per item: the tags a person took off it or said it lacks.
    """

    vectors: NDArray[np.float32]
    tags: list[frozenset[str]] = field(default_factory=list)
    absent: list[frozenset[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.absent and len(self.absent) != len(self.tags):
            raise ValueError(f"absent has {len(self.absent)} entries for {len(self.tags)} items; give one per item")

    @staticmethod
    def empty(dims: int) -> LabelledSet:
        return LabelledSet(np.zeros((0, dims), dtype=np.float32), [])

    def absent_of(self, i: int) -> frozenset[str]:
        return self.absent[i] if self.absent else frozenset()


@dataclass(frozen=True)
class FacetLabels:
    """One facet's labels: `y` (m, n_tags) 0/1, `mask` (m, n_tags) where a row is a labelled example of a tag.

    A row with a present tag of the facet is labelled for every tag (1 where present, 0 elsewhere); a row with only
    absent labels in it is labelled, as a 0, for those tags alone.
    """

    y: NDArray[np.float32]
    mask: NDArray[np.bool_]


def fit_tagger(
    taxonomy: Taxonomy,
    tag_vectors: dict[str, NDArray[np.float32]],
    labelled: LabelledSet,
    params: FitParams = FitParams(),
    *,
    zero_shot: bool = False,
) -> Tagger:
    """One head per facet.

    Args:
        tag_vectors: per tag, (k, dims) unit vectors of its `prototype_texts`.
        labelled: human labels; ignored when `zero_shot`. An absent label on a tag of a multi-label facet is a
            negative example of that tag only; absent labels in single-label facets are not used.
    """
    heads = []
    for facet in taxonomy.facets:
        labels = _facet_labels(facet, labelled)
        if not zero_shot and _has_enough(labels, facet.multi_label, params.min_examples):
            heads.append(_supervised_head(facet, tag_vectors, labelled.vectors, labels, params))
        else:
            heads.append(_zero_shot_head(facet, tag_vectors, params))
    return Tagger(heads=tuple(heads))


def _facet_labels(facet: FacetSpec, labelled: LabelledSet) -> FacetLabels:
    """Rows of items with no label in this facet are all zero and masked out.

    So are the rows of items with two or more tags of a single-label facet: people tagged them while the facet was
    multi-label, or the tags were in different facets. Which one is right is for a person to say (`tagworker tags
    load` counts them), not for the fit to guess. In a single-label facet an item with only absent labels is
    masked out too: the softmax needs the item's class, and "not T" does not name one.
    """
    index = {t.name: j for j, t in enumerate(facet.tags)}
    y = np.zeros((len(labelled.tags), len(index)), dtype=np.float32)
    mask = np.zeros(y.shape, dtype=bool)
    for i, tags in enumerate(labelled.tags):
        present = [index[t] for t in tags if t in index]
        if facet.multi_label or len(present) == 1:
            y[i, present] = 1.0
            mask[i] = bool(present)
        if facet.multi_label and not present:
            mask[i, [index[t] for t in labelled.absent_of(i) if t in index]] = True
    return FacetLabels(y, mask)


def _has_enough(labels: FacetLabels, multi_label: bool, min_examples: int) -> bool:
    positives = labels.y.sum(axis=0)
    if multi_label:
        negatives = (labels.mask & (labels.y == 0)).sum(axis=0)
        return bool(((positives >= min_examples) & (negatives >= min_examples)).any())
    return int((positives >= min_examples).sum()) >= 2


def _zero_shot_head(facet: FacetSpec, tag_vectors: dict[str, NDArray[np.float32]], params: FitParams) -> FacetHead:
    prototypes = np.stack([_unit(tag_vectors[t.name].mean(axis=0)) for t in facet.tags]).astype(np.float32)
    return FacetHead(
        facet=facet.name,
        multi_label=facet.multi_label,
        kind="zero-shot",
        tags=tuple(t.name for t in facet.tags),
        applies_to=facet.applies_to,
        thresholds=np.full(len(facet.tags), params.zero_shot_threshold, dtype=np.float32),
        prototypes=prototypes,
    )


def _supervised_head(
    facet: FacetSpec,
    tag_vectors: dict[str, NDArray[np.float32]],
    vectors: NDArray[np.float32],
    labels: FacetLabels,
    params: FitParams,
) -> FacetHead:
    rows = np.flatnonzero(labels.mask.any(axis=1))
    rng = np.random.default_rng(params.seed)
    shuffled = rng.permutation(rows)
    n_holdout = int(len(shuffled) * params.holdout_share)
    holdout, train = shuffled[:n_holdout], shuffled[n_holdout:]
    pseudo = _tag_examples(facet, tag_vectors)
    thresholds = np.full(len(facet.tags), params.default_threshold, dtype=np.float32)
    if n_holdout:
        probe = _fit_head(facet, *_with_examples(vectors, labels, train, pseudo), params)
        scores = probe.scores(vectors[holdout])
        y, mask = labels.y[holdout], labels.mask[holdout]
        thresholds = choose_thresholds(scores, y, facet.multi_label, thresholds, mask=mask)
    head = _fit_head(facet, *_with_examples(vectors, labels, rows, pseudo), params)
    return replace(head, thresholds=thresholds)


def _with_examples(
    vectors: NDArray[np.float32],
    labels: FacetLabels,
    rows: NDArray[np.intp],
    pseudo: tuple[NDArray[np.float32], NDArray[np.float32]],
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """x, y and mask of the labelled `rows` followed by the tag texts (labelled for every tag)."""
    pseudo_x, pseudo_y = pseudo
    return (
        np.vstack([vectors[rows], pseudo_x]),
        np.vstack([labels.y[rows], pseudo_y]),
        np.vstack([labels.mask[rows], np.ones(pseudo_y.shape, dtype=bool)]),
    )


def _tag_examples(
    facet: FacetSpec, tag_vectors: dict[str, NDArray[np.float32]]
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    xs, ys = [], []
    for j, tag in enumerate(facet.tags):
        vectors = tag_vectors[tag.name]
        xs.append(vectors)
        onehot = np.zeros((len(vectors), len(facet.tags)), dtype=np.float32)
        onehot[:, j] = 1.0
        ys.append(onehot)
    return np.vstack(xs).astype(np.float32), np.vstack(ys)


def _fit_head(
    facet: FacetSpec, x: NDArray[np.float32], y: NDArray[np.float32], mask: NDArray[np.bool_], params: FitParams
) -> FacetHead:
    """A supervised head; `mask` (rows, n_tags) says which rows are examples of which tags (multi-label only)."""
    if facet.multi_label:
        coef, intercept = _fit_one_vs_rest(x, y, mask, params.regularization_c)
    else:
        coef, intercept = _fit_softmax(x, y, params.regularization_c)
    keep = np.random.default_rng(params.seed).permutation(len(x))[: params.max_exemplars]
    # Items with only absent labels stay exemplars, with their mask: near items people took T off, the kNN vote
    # for T must fall, or it alone keeps T on their neighbours. The mask keeps them out of the other tags' votes.
    partial = not bool(mask[keep].all())
    return FacetHead(
        facet=facet.name,
        multi_label=facet.multi_label,
        kind="supervised",
        tags=tuple(t.name for t in facet.tags),
        applies_to=facet.applies_to,
        thresholds=np.zeros(len(facet.tags), dtype=np.float32),
        coef=coef,
        intercept=intercept,
        exemplars=np.ascontiguousarray(x[keep], dtype=np.float32),
        exemplar_tags=np.ascontiguousarray(y[keep], dtype=np.float32),
        exemplar_mask=np.ascontiguousarray(mask[keep]) if partial else None,
    )


def _fit_softmax(
    x: NDArray[np.float32], y: NDArray[np.float32], c: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    from sklearn.linear_model import LogisticRegression

    n_tags = y.shape[1]
    model = LogisticRegression(C=c, max_iter=2000).fit(x, y.argmax(axis=1))
    coef = np.zeros((n_tags, x.shape[1]), dtype=np.float32)
    intercept = np.full(n_tags, -50.0, dtype=np.float32)  # a tag with no example never wins
    if len(model.classes_) == 2:  # sklearn keeps one row for two classes; softmax of (-z/2, z/2) = sigmoid(z)
        coef[model.classes_] = np.vstack([-model.coef_[0] / 2, model.coef_[0] / 2])
        intercept[model.classes_] = [-model.intercept_[0] / 2, model.intercept_[0] / 2]
    else:
        coef[model.classes_] = model.coef_
        intercept[model.classes_] = model.intercept_
    return coef, intercept


def _fit_one_vs_rest(
    x: NDArray[np.float32], y: NDArray[np.float32], mask: NDArray[np.bool_], c: float
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """One sigmoid per tag, fit on the rows `mask` marks as examples of that tag."""
    from sklearn.linear_model import LogisticRegression

    coef = np.zeros((y.shape[1], x.shape[1]), dtype=np.float32)
    intercept = np.zeros(y.shape[1], dtype=np.float32)
    for j in range(y.shape[1]):
        rows = mask[:, j]
        target = y[rows, j]
        if target.min() == target.max():  # all or none: a constant answer
            intercept[j] = 50.0 if target[0] else -50.0
            continue
        model = LogisticRegression(C=c, max_iter=2000).fit(x[rows], target)
        coef[j], intercept[j] = model.coef_[0], model.intercept_[0]
    return coef, intercept


def choose_thresholds(
    scores: NDArray[np.float32],
    gold: NDArray[np.float32],
    multi_label: bool,
    fallback: NDArray[np.float32],
    *,
    mask: NDArray[np.bool_] | None = None,
) -> NDArray[np.float32]:
    """Per tag, the score threshold with the best F1 on held-out items; `fallback` where too few positives.

    Args:
        mask: (n, n_tags) which items are labelled for which tag (multi-label); by default every item for every tag.
    """
    n_tags = scores.shape[1]
    if multi_label:
        labelled = np.ones_like(gold, dtype=bool) if mask is None else mask
        confidence, correct, predicted = scores, gold > 0, labelled
    else:
        top = scores.argmax(axis=1)
        predicted = np.zeros_like(gold, dtype=bool)
        predicted[np.arange(len(top)), top] = True
        confidence, correct = scores, predicted & (gold > 0)
    shared = _best_threshold(confidence[predicted], correct[predicted], int((gold > 0).sum()))
    thresholds = fallback.copy() if shared is None else np.full(n_tags, shared, dtype=np.float32)
    for j in range(n_tags):
        positives = int((gold[:, j] > 0).sum())
        if positives >= MIN_HELDOUT_POSITIVES:
            mask = predicted[:, j]
            best = _best_threshold(confidence[mask, j], correct[mask, j], positives)
            if best is not None:
                thresholds[j] = best
    return thresholds


def _best_threshold(scores: NDArray[np.float32], correct: NDArray[np.bool_], n_gold: int) -> float | None:
    """A threshold with the best F1 = 2 TP / (predicted + gold), halfway to the next lower score.

    Halfway, not at the lowest kept score, so an unseen item a little below every held-out one is not dropped.
    """
    if n_gold == 0 or len(scores) == 0:
        return None
    ranked = scores[np.argsort(-scores, kind="stable")]
    true_positives = np.cumsum(correct[np.argsort(-scores, kind="stable")])
    f1 = 2 * true_positives / (np.arange(1, len(ranked) + 1) + n_gold)
    best = int(np.flatnonzero(f1 == f1.max())[-1])
    below = float(ranked[best + 1]) if best + 1 < len(ranked) else 0.0
    return (float(ranked[best]) + below) / 2


def tag_text_vectors(
    embedder: Embedder, taxonomy: Taxonomy, *, names_only: bool = False
) -> dict[str, NDArray[np.float32]]:
    """Per tag, the vectors of its name (and description and examples unless `names_only`)."""
    return {
        tag.name: embedder.embed(prototype_texts(tag)[:1] if names_only else prototype_texts(tag)).vectors
        for facet in taxonomy.facets
        for tag in facet.tags
    }


def _unit(vector: NDArray[np.float32]) -> NDArray[np.float32]:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
