"""Taxonomy parsing, tagger fitting (zero-shot, supervised, abstention), thresholds and correction plans."""

from __future__ import annotations

import numpy as np
import pytest

from worker.errors import CorrectionError, TaxonomyError
from worker.pipeline.corrections import TagInfo, plan_against_later_decisions, plan_correction
from worker.pipeline.tag import dump_tagger, load_tagger
from worker.pipeline.tag_fit import FitParams, LabelledSet, choose_thresholds, fit_tagger
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY, parse_taxonomy, read_taxonomy, single_facet

DIMS = 8


def unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


def axis(i: int, noise: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    v = np.zeros(DIMS, dtype=np.float32)
    v[i] = 1.0
    if noise and rng is not None:
        v = v + rng.normal(0, noise, DIMS).astype(np.float32)
    return unit(v)


def test_the_packaged_taxonomy_has_the_marketing_facets() -> None:
    taxonomy = read_taxonomy(DEFAULT_TAXONOMY)
    assert {f.name for f in taxonomy.facets} == {"funnel_stage", "channel", "topic", "feedback_type"}
    assert {"bug", "feature_request", "billing", "usability", "praise", "churn_risk"} <= set(taxonomy.tag_names)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "is empty"),
        ({"facets": []}, "at least 1"),
        ({"facets": [{"name": "a", "tags": [{"name": "x"}, {"name": "x"}]}]}, "tag names appear twice"),
        ({"facets": [{"name": "a", "tags": [{"name": "x"}]}, {"name": "b", "tags": [{"name": "x"}]}]}, "twice"),
        ({"facets": [{"name": "a", "tags": [{"name": "x"}]}, {"name": "a", "tags": [{"name": "y"}]}]}, "facet names"),
        ({"facets": [{"name": "a", "tags": []}]}, "at least 1"),
        ({"facets": [{"name": "a", "tags": [{"name": "  "}]}]}, "at least 1 character"),
        ({"facets": [{"name": "a", "colour": "red", "tags": [{"name": "x"}]}]}, "Extra inputs"),
        ({"facets": [{"name": "a", "applies_to": ["tweets"], "tags": [{"name": "x"}]}]}, "applies_to"),
    ],
)
def test_a_bad_taxonomy_is_refused_with_the_reason(data: object, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy(data)


def test_an_unparsable_taxonomy_file_names_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "t.yaml"
    path.write_text("facets: [unclosed", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="does not parse"):
        read_taxonomy(path)


def test_zero_shot_assigns_the_nearest_tag_and_abstains_far_from_all() -> None:
    taxonomy = single_facet("f", ["a", "b", "c"], multi_label=False)
    tag_vectors = {"a": axis(0)[None], "b": axis(1)[None], "c": axis(2)[None]}
    tagger = fit_tagger(taxonomy, tag_vectors, LabelledSet.empty(DIMS), FitParams(zero_shot_threshold=0.5))
    vectors = np.stack([unit(axis(1) + 0.2 * axis(0)), axis(5)])
    found, margins = tagger.predict(vectors)
    assert [a.tag for a in found[0]] == ["b"] and found[0][0].head == "zero-shot"
    assert found[1] == []  # abstains: cosine 0 to every tag
    assert margins.shape == (2,)


def test_a_facet_goes_supervised_with_enough_labels_and_learns_what_names_miss() -> None:
    rng = np.random.default_rng(0)
    taxonomy = single_facet("f", ["a", "b"], multi_label=False)
    # The tag names point at axes 0 and 1, but people label items near axes 2 (a) and 3 (b).
    tag_vectors = {"a": axis(0)[None], "b": axis(1)[None]}
    vectors = np.stack([axis(2 + i % 2, 0.1, rng) for i in range(40)])
    labelled = LabelledSet(vectors, [frozenset({"a" if i % 2 == 0 else "b"}) for i in range(40)])
    tagger = fit_tagger(taxonomy, tag_vectors, labelled, FitParams(min_examples=5))
    assert tagger.kinds == {"f": "supervised"}
    found, _ = tagger.predict(np.stack([axis(2, 0.1, rng), axis(3, 0.1, rng)]))
    assert [[a.tag for a in f] for f in found] == [["a"], ["b"]]
    zero = fit_tagger(taxonomy, tag_vectors, labelled, FitParams(min_examples=5), zero_shot=True)
    assert zero.kinds == {"f": "zero-shot"}


def test_too_few_labels_keep_the_facet_zero_shot() -> None:
    taxonomy = single_facet("f", ["a", "b"], multi_label=False)
    labelled = LabelledSet(np.stack([axis(0)] * 4), [frozenset({"a"})] * 4)
    tagger = fit_tagger(taxonomy, {"a": axis(0)[None], "b": axis(1)[None]}, labelled, FitParams(min_examples=5))
    assert tagger.kinds == {"f": "zero-shot"}


def test_multi_label_supervised_heads_give_several_tags() -> None:
    rng = np.random.default_rng(1)
    taxonomy = single_facet("f", ["x", "y"], multi_label=True)
    rows, tags = [], []
    for i in range(60):
        has_x, has_y = i % 3 != 0, i % 3 != 1
        rows.append(unit(axis(0) * has_x + axis(1) * has_y + rng.normal(0, 0.05, DIMS)))
        tags.append(frozenset({t for t, on in (("x", has_x), ("y", has_y)) if on}))
    tagger = fit_tagger(taxonomy, {"x": axis(0)[None], "y": axis(1)[None]}, LabelledSet(np.stack(rows), tags))
    found, _ = tagger.predict(np.stack([unit(axis(0) + axis(1)), axis(0)]))
    assert {a.tag for a in found[0]} == {"x", "y"}
    assert {a.tag for a in found[1]} == {"x"}


def test_facets_only_tag_the_kinds_they_apply_to() -> None:
    taxonomy = parse_taxonomy({"facets": [{"name": "t", "applies_to": ["feedback"], "tags": [{"name": "bug"}]}]})
    tagger = fit_tagger(taxonomy, {"bug": axis(0)[None]}, LabelledSet.empty(DIMS))
    found, margins = tagger.predict(np.stack([axis(0), axis(0)]), ["content", "feedback"])
    assert found[0] == [] and [a.tag for a in found[1]] == ["bug"]
    assert np.isinf(margins[0])


def test_a_tagger_survives_serialization_without_pickle() -> None:
    rng = np.random.default_rng(2)
    taxonomy = single_facet("f", ["a", "b"], multi_label=False)
    vectors = np.stack([axis(i % 2, 0.1, rng) for i in range(30)])
    labelled = LabelledSet(vectors, [frozenset({"ab"[i % 2]}) for i in range(30)])
    tagger = fit_tagger(taxonomy, {"a": axis(0)[None], "b": axis(1)[None]}, labelled)
    again = load_tagger(dump_tagger(tagger))
    probe = np.stack([axis(0, 0.2, rng) for _ in range(5)])
    np.testing.assert_allclose(tagger.heads[0].scores(probe), again.heads[0].scores(probe), rtol=1e-6)
    assert again.heads[0].applies_to == tagger.heads[0].applies_to


def test_thresholds_maximize_each_tags_f1_on_held_out_items() -> None:
    # Single-label: tag 0 is right when its score is >= 0.6, wrong below.
    scores = np.array([[0.9, 0.1], [0.7, 0.3], [0.55, 0.45], [0.52, 0.48]], dtype=np.float32)
    gold = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    thresholds = choose_thresholds(scores, gold, False, np.full(2, 0.25, dtype=np.float32))
    assert 0.55 < thresholds[0] <= 0.7


@pytest.mark.parametrize(
    ("added", "removed", "message"),
    [
        ([], [], "at least one tag"),
        (["nope"], [], "unknown tag"),
        (["bug"], ["bug"], "both added and removed"),
        (["awareness", "conversion"], [], "single-label facet funnel"),
    ],
)
def test_contradictory_or_unknown_corrections_are_refused(added: list[str], removed: list[str], message: str) -> None:
    tags = {
        "bug": TagInfo("feedback_type", True),
        "awareness": TagInfo("funnel", False),
        "conversion": TagInfo("funnel", False),
    }
    with pytest.raises(CorrectionError, match=message):
        plan_correction(kind="content", current=set(), added=added, removed=removed, tags=tags)


def test_adding_a_single_label_tag_displaces_the_facets_other_tag() -> None:
    tags = {"awareness": TagInfo("funnel", False), "conversion": TagInfo("funnel", False), "bug": TagInfo("t", True)}
    plan = plan_correction(kind="content", current={"awareness", "bug"}, added=["conversion"], removed=[], tags=tags)
    assert plan.take_off == ("awareness",)
    assert plan.labels == {"conversion": True, "awareness": False}
    assert plan.before == ("awareness", "bug") and plan.after == ("bug", "conversion")


@pytest.mark.parametrize(
    ("added", "decided", "add", "take_off", "labels"),
    [
        (["conversion", "bug"], {"conversion"}, ("bug",), (), {"bug": True}),  # what it displaced stays too
        (["conversion", "bug"], {"awareness"}, ("bug",), (), {"bug": True}),  # its single-label facet was decided
        (["conversion"], {"conversion"}, (), (), {}),
        (["conversion"], {"pricing"}, ("conversion",), ("awareness",), {"conversion": True, "awareness": False}),
    ],
    ids=["added-tag-decided-later", "displaced-tag-decided-later", "everything-decided-later", "nothing-decided"],
)
def test_tags_decided_later_keep_that_decision_when_an_older_correction_arrives(
    added: list[str], decided: set[str], add: tuple[str, ...], take_off: tuple[str, ...], labels: dict[str, bool]
) -> None:
    tags = {"awareness": TagInfo("funnel", False), "conversion": TagInfo("funnel", False), "bug": TagInfo("t", True)}

    plan = plan_against_later_decisions(
        kind="content", current={"awareness"}, added=added, removed=[], tags=tags, decided=decided
    )

    assert (plan.add, plan.take_off, plan.labels) == (add, take_off, labels)
    assert plan.after == tuple(sorted(({"awareness"} - set(take_off)) | set(add)))


def test_items_with_two_tags_of_a_single_label_facet_teach_the_fit_nothing_about_it() -> None:
    """The fit counted such an item for the facet's first tag, an arbitrary pick that could even make it supervised."""
    tags = [frozenset({"a"})] * 3 + [frozenset({"b"})] * 5 + [frozenset({"a", "b"})] * 2
    vectors = np.stack([axis(0)] * 3 + [axis(1)] * 5 + [axis(2)] * 2)
    labelled = LabelledSet(vectors, tags)
    tag_vectors = {"a": axis(0)[None], "b": axis(1)[None]}
    single = fit_tagger(
        single_facet("f", ["a", "b"], multi_label=False), tag_vectors, labelled, FitParams(min_examples=5)
    )
    assert single.kinds == {"f": "zero-shot"}, "'a' has 3 labelled items, not 5"
    multi = fit_tagger(
        single_facet("f", ["a", "b"], multi_label=True), tag_vectors, labelled, FitParams(min_examples=5)
    )
    assert multi.kinds == {"f": "supervised"}, "in a multi-label facet both tags of an item count"
