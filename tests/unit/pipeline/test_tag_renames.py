"""`renamed_from`: a renamed tag keeps its stored row; ambiguous or merging renames are refused."""

from __future__ import annotations

import hashlib
import json

import pytest

from worker.errors import TaxonomyError
from worker.pipeline.tag_renames import TagRename, plan_renames
from worker.pipeline.taxonomy import (
    DEFAULT_TAXONOMY,
    parse_stored_taxonomy,
    parse_taxonomy,
    read_taxonomy,
)


def taxonomy(*tags: dict[str, object], other: tuple[dict[str, object], ...] = ()) -> dict[str, object]:
    facets: list[dict[str, object]] = [{"name": "topic", "multi_label": True, "tags": list(tags)}]
    if other:
        facets.append({"name": "stage", "tags": list(other)})
    return {"facets": facets}


def test_renamed_from_is_read_and_listed_per_new_name() -> None:
    parsed = parse_taxonomy(taxonomy({"name": "conversion_rate_optimization", "renamed_from": ["cro", "cr"]},
                                     {"name": "seo"}))  # fmt: skip
    assert parsed.renames == {"conversion_rate_optimization": ("cro", "cr")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            taxonomy({"name": "cro_new", "renamed_from": ["seo"]}, {"name": "seo"}),
            r"tag 'cro_new' is renamed_from 'seo', which is still a tag of this taxonomy; drop 'seo' from the file",
        ),
        (
            taxonomy({"name": "a", "renamed_from": ["old"]}, other=({"name": "b", "renamed_from": ["old"]},)),
            r"tags 'a' and 'b' are both renamed_from 'old'; .* keep it in one renamed_from list",
        ),
        (taxonomy({"name": "a", "renamed_from": ["a"]}), r"tag 'a' lists its own name in renamed_from; remove it"),
        (
            taxonomy({"name": "a", "renamed_from": ["b"]}, {"name": "b", "renamed_from": ["a"]}),
            r"tag 'a' is renamed_from 'b', which is still a tag of this taxonomy",
        ),
        (
            taxonomy({"name": "a", "renamed_from": [""]}),
            r"tag 'a', renamed_from\[0\]: String should have at least 1 character",
        ),
    ],
    ids=["old-name-still-a-tag", "old-name-claimed-twice", "own-name", "swap", "empty-name"],
)
def test_an_ambiguous_rename_is_refused_naming_the_tags(data: dict[str, object], message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        parse_taxonomy(data)


def test_a_file_without_renames_keeps_the_hash_it_had_before_renamed_from_existed() -> None:
    """Otherwise loading the same file after an upgrade made a new version (and a tagger refit)."""
    parsed = read_taxonomy(DEFAULT_TAXONOMY)
    before = parsed.model_dump(mode="json", exclude={"facets": {"__all__": {"tags": {"__all__": {"renamed_from"}}}}})
    legacy = hashlib.sha256(json.dumps(before, sort_keys=True, ensure_ascii=True).encode()).hexdigest()
    assert parsed.sha256 == legacy
    assert parse_stored_taxonomy(parsed.document()) == parsed


def test_a_rename_changes_the_hash_and_is_stored_in_the_document() -> None:
    plain = parse_taxonomy(taxonomy({"name": "cro"}))
    renamed = parse_taxonomy(taxonomy({"name": "cro", "renamed_from": ["conversion"]}))
    assert plain.sha256 != renamed.sha256
    assert parse_stored_taxonomy(renamed.document()).renames == {"cro": ("conversion",)}


def test_a_rename_takes_over_the_stored_tag_once() -> None:
    renames = {"conversion_rate_optimization": ("cro",)}
    first = plan_renames(renames, stored={"cro": 7, "seo": 8}, done=set())
    assert first.renames == (TagRename(7, "cro", "conversion_rate_optimization"),) and first.unmatched == {}
    again = plan_renames(renames, stored={"conversion_rate_optimization": 7, "seo": 8}, done={("cro", 7)})
    assert again.renames == () and again.unmatched == {}


def test_an_old_name_given_to_a_new_tag_since_is_not_taken_over_again() -> None:
    plan = plan_renames({"conversion_rate_optimization": ("cro",)},
                        stored={"conversion_rate_optimization": 7, "cro": 12}, done={("cro", 7)})  # fmt: skip
    assert plan.renames == ()


def test_a_rename_of_a_retired_tag_brings_it_back_under_its_new_name() -> None:
    # Retired tags are stored like current ones: the plan does not tell them apart, and the load un-retires them.
    plan = plan_renames({"b": ("a",)}, stored={"a": 3}, done={("x", 3)})
    assert plan.renames == (TagRename(3, "a", "b"),)


def test_an_old_name_no_stored_tag_has_is_a_note_on_the_first_load_then_silent() -> None:
    first = plan_renames({"b": ("typo", "a")}, stored={"seo": 1}, done=set())
    assert first.renames == () and first.unmatched == {"b": ("typo", "a")}
    later = plan_renames({"b": ("typo", "a")}, stored={"seo": 1, "b": 2}, done=set())
    assert later.renames == () and later.unmatched == {}


def test_renaming_onto_a_stored_tag_is_refused_rather_than_merging_two_tags() -> None:
    with pytest.raises(TaxonomyError, match=r"tag 'b' cannot take over 'a' \(renamed_from\): 'b' is a tag already"):
        plan_renames({"b": ("a",)}, stored={"a": 1, "b": 2}, done=set())


def test_taking_over_two_stored_tags_is_refused() -> None:
    with pytest.raises(TaxonomyError, match=r"tag 'c' is renamed_from 'a', 'b', which are all stored tags: .* one"):
        plan_renames({"c": ("a", "b")}, stored={"a": 1, "b": 2}, done=set())


def test_a_chain_of_renames_takes_over_the_name_stored_now() -> None:
    plan = plan_renames({"c": ("a", "b")}, stored={"b": 1}, done={("a", 1)})
    assert plan.renames == (TagRename(1, "b", "c"),)
