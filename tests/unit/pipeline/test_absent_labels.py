"""What a person's removal of a tag (an absent label) teaches the fit: "not T" for that item, nothing more."""

from __future__ import annotations

import numpy as np
import pytest

from worker.pipeline.tag import FacetHead, Tagger, dump_tagger, load_tagger
from worker.pipeline.tag_fit import FitParams, LabelledSet, choose_thresholds, fit_tagger
from worker.pipeline.taxonomy import single_facet

DIMS = 8
TAGS = ["pricing", "onboarding", "brand"]
TAG_VECTORS = {name: np.eye(DIMS, dtype=np.float32)[j][None] for j, name in enumerate(TAGS)}


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def near(direction: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    return unit(direction + rng.normal(0, 0.05, (n, DIMS)))


def axis(*indices: int) -> np.ndarray:
    return unit(np.eye(DIMS, dtype=np.float32)[list(indices)].sum(axis=0))


WRONG = axis(0, 3)  # where the model puts `pricing` and people take it off again


def labelled(*, with_removals: bool) -> LabelledSet:
    """Ten items per tag (one tag each), then ten items near WRONG that people only took `pricing` off."""
    rng = np.random.default_rng(0)
    vectors = [near(axis(j), 10, rng) for j in range(3)]
    tags = [frozenset({name}) for name in TAGS for _ in range(10)]
    absent = [frozenset[str]()] * len(tags)
    if with_removals:
        vectors.append(near(WRONG, 10, rng))
        tags += [frozenset()] * 10
        absent += [frozenset({"pricing"})] * 10
    return LabelledSet(np.vstack(vectors), tags, absent)


def fit(labels: LabelledSet, *, multi_label: bool = True) -> Tagger:
    return fit_tagger(single_facet("topic", TAGS, multi_label=multi_label), TAG_VECTORS, labels, FitParams())


def tags_of(tagger: Tagger, vectors: np.ndarray) -> list[set[str]]:
    found, _ = tagger.predict(vectors)
    return [{a.tag for a in row} for row in found]


def test_items_near_where_people_removed_a_tag_stop_getting_it_after_the_fit() -> None:
    """The removals were not training data: `pricing` came back on every similar item after each refit."""
    probe = np.stack([near(WRONG, 1, np.random.default_rng(7))[0], axis(0)])
    assert tags_of(fit(labelled(with_removals=False)), probe)[0] == {"pricing"}, "the mistake to correct"

    tagger = fit(labelled(with_removals=True))
    after = tags_of(tagger, probe)

    assert "pricing" not in after[0]
    assert after[1] == {"pricing"}, "items like the ones people tagged `pricing` still get it"
    # Well under any threshold, not just this fit's: the kNN vote of the removals' neighbourhood says no too.
    # Were the removals no exemplars, the nearest ones would be `pricing` items, a vote of 1 (score >= 0.5).
    assert tagger.heads[0].scores(probe[:1])[0, 0] < FitParams().default_threshold


def test_a_removal_teaches_nothing_about_the_facets_other_tags() -> None:
    """Its item is no negative for `onboarding` or `brand`: their scores are those of a fit without it."""
    probe = np.vstack([near(WRONG, 5, np.random.default_rng(8)), np.eye(DIMS, dtype=np.float32)])
    before = fit(labelled(with_removals=False)).heads[0].scores(probe)
    after = fit(labelled(with_removals=True)).heads[0].scores(probe)
    np.testing.assert_allclose(after[:, 1:], before[:, 1:], rtol=1e-5, atol=1e-6)
    assert (after[:5, 0] < before[:5, 0] - 0.3).all()


def test_an_item_with_only_a_removal_votes_against_that_tag_and_for_nothing() -> None:
    """In the kNN vote it is a 0 for `pricing` alone; a row of zeros would also vote down `onboarding` beside it."""
    exemplars = np.stack([axis(0), axis(0, 1)])
    head = FacetHead(
        facet="topic", multi_label=True, kind="supervised", tags=("pricing", "onboarding"),
        thresholds=np.full(2, 0.6, dtype=np.float32), coef=np.zeros((2, DIMS), dtype=np.float32),
        intercept=np.zeros(2, dtype=np.float32), exemplars=exemplars,
        exemplar_tags=np.array([[1, 1], [0, 0]], dtype=np.float32),
        exemplar_mask=np.array([[True, True], [True, False]]),
    )  # fmt: skip
    again = load_tagger(dump_tagger(Tagger(heads=(head,)))).heads[0]

    for loaded in (head, again):
        scores = loaded.scores(axis(0, 1)[None])[0]  # the removal's own place: it is the nearest exemplar
        assert scores[0] == pytest.approx(0.25, abs=0.01), "the model's 0.5, and no kNN vote for `pricing`"
        assert scores[1] == pytest.approx(0.75, abs=1e-3), "the model's 0.5, and its one exemplar says yes"


def test_removals_count_as_labelled_negatives_for_going_supervised() -> None:
    rng = np.random.default_rng(3)
    labels = LabelledSet(
        np.vstack([near(axis(0), 5, rng), near(WRONG, 5, rng)]),
        [frozenset({"pricing"})] * 5 + [frozenset()] * 5,
        [frozenset()] * 5 + [frozenset({"pricing"})] * 5,
    )
    assert fit(labels).kinds == {"topic": "supervised"}
    without = LabelledSet(labels.vectors[:5], labels.tags[:5])
    assert fit(without).kinds == {"topic": "zero-shot"}, "no negatives of `pricing` without the removals"


def test_held_out_items_a_tag_was_not_decided_for_do_not_move_its_threshold() -> None:
    """The five items between the positives of tag 1 are only known to lack tag 0."""
    tag1 = np.array([0.9, 0.8, 0.7, 0.65, 0.64, 0.63, 0.62, 0.61, 0.6], dtype=np.float32)
    scores = np.stack([np.zeros_like(tag1), tag1], axis=1)
    gold = np.zeros_like(scores)
    gold[[0, 1, 2, 8], 1] = 1
    mask = np.ones(scores.shape, dtype=bool)
    mask[3:8, 1] = False
    fallback = np.full(2, 0.25, dtype=np.float32)

    assert choose_thresholds(scores, gold, True, fallback)[1] > 0.65
    assert choose_thresholds(scores, gold, True, fallback, mask=mask)[1] < 0.6


def test_single_label_facets_ignore_removals() -> None:
    """A removal ("not `pricing`") names no class for the softmax: the head is the one fitted without it."""
    probe = np.vstack([near(WRONG, 5, np.random.default_rng(9)), np.eye(DIMS, dtype=np.float32)])
    before = fit(labelled(with_removals=False), multi_label=False).heads[0]
    after = fit(labelled(with_removals=True), multi_label=False).heads[0]
    assert after.exemplar_mask is None
    np.testing.assert_array_equal(after.coef, before.coef)
    np.testing.assert_array_equal(after.thresholds, before.thresholds)
    np.testing.assert_allclose(after.scores(probe), before.scores(probe), rtol=1e-6)


def test_absent_labels_need_one_set_per_item() -> None:
    with pytest.raises(ValueError, match="one per item"):
        LabelledSet(np.zeros((2, DIMS), dtype=np.float32), [frozenset()] * 2, [frozenset()])
