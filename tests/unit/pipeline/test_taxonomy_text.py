"""Taxonomy strings with control characters are refused before anything is written, naming the tag and field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from worker.errors import TaxonomyError
from worker.pipeline.taxonomy import parse_stored_taxonomy, parse_taxonomy, read_taxonomy


def taxonomy(**tag: object) -> dict[str, object]:
    return {"facets": [{"name": "topic", "tags": [{"name": "seo"}, {"name": "pricing", **tag}]}]}


@pytest.mark.parametrize(
    ("data", "where"),
    [
        ({"name": "ours\0", **taxonomy()}, r"name: contains control character U\+0000 at position 4"),
        ({"facets": [{"name": "to\x1bpic", "tags": [{"name": "seo"}]}]}, r"facet 'to\\x1bpic', name: .* U\+001B"),
        (
            {"facets": [{"name": "topic", "description": "a\0b", "tags": [{"name": "seo"}]}]},
            r"facet 'topic', description: .* U\+0000",
        ),
        (taxonomy(name="pri\0cing"), r"facet 'topic', tag 'pri\\x00cing', name: .* U\+0000 at position 3"),
        (taxonomy(name="pri\ncing"), r"tag 'pri\\ncing', name: .* U\+000A"),
        (taxonomy(description="Prices\0"), r"facet 'topic', tag 'pricing', description: .* U\+0000 at position 6"),
        (taxonomy(examples=["ok", "too \x07 loud"]), r"tag 'pricing', examples\[1\]: .* U\+0007"),
    ],
    ids=["taxonomy-name", "facet-name", "facet-description", "tag-name", "newline-in-name", "description", "example"],
)
def test_a_control_character_is_refused_naming_the_tag_and_the_field(data: dict[str, object], where: str) -> None:
    with pytest.raises(TaxonomyError, match=where) as refused:
        parse_taxonomy(data)
    assert "\0" not in str(refused.value) and "\x1b" not in str(refused.value), "the message quotes it escaped"
    assert "Tuple should have at least 1 item" not in str(refused.value), "only the entry at fault is reported"


def test_descriptions_and_examples_may_hold_line_breaks_and_tabs() -> None:
    parsed = parse_taxonomy(taxonomy(description="Prices,\n\tplans and discounts.\r\n", examples=["a\tb\nc"]))

    assert parsed.facets[0].tags[1].description.startswith("Prices,\n\t")


def test_a_nul_in_a_yaml_file_is_refused_with_the_file_tag_and_field(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text('facets:\n  - name: topic\n    tags:\n      - name: seo\n        examples: ["x\\0y"]\n')

    with pytest.raises(
        TaxonomyError, match=rf"taxonomy file {re.escape(str(path))} .* tag 'seo', examples\[0\]: .* U\+0000"
    ):
        read_taxonomy(path)


def test_a_taxonomy_stored_before_the_check_still_reads_back() -> None:
    """Postgres kept descriptions with control characters before they were refused; the worker must still tag."""
    stored = {"name": "ours\x07", "facets": [{"name": "topic", "description": "a\x1bb", "tags": [
        {"name": "seo", "description": "Search\x07 engines\tand\nmore", "examples": ["bell \x07 here"]}]}]}  # fmt: skip
    read = parse_stored_taxonomy(stored)
    tag = read.facets[0].tags[0]
    assert (read.name, read.facets[0].description) == ("ours ", "a b")
    assert (tag.name, tag.description, tag.examples) == ("seo", "Search  engines\tand\nmore", ("bell   here",))
