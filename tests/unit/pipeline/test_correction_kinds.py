"""Corrections respect a facet's `applies_to`: a feedback type never goes on a content item, but can come off."""

from __future__ import annotations

import pytest

from worker.errors import CorrectionError
from worker.pipeline.corrections import TagInfo, plan_against_later_decisions, plan_correction

TAGS = {
    "awareness": TagInfo("funnel_stage", False, applies_to=("content",)),
    "bug": TagInfo("feedback_type", True, applies_to=("feedback",)),
    "praise": TagInfo("feedback_type", True, applies_to=("feedback",)),
    "pricing": TagInfo("topic", True),  # the default: both kinds
}


@pytest.mark.parametrize(("kind", "added"), [("content", ["bug"]), ("feedback", ["pricing", "awareness"])])
def test_adding_a_tag_of_a_facet_for_the_other_kind_is_refused_naming_tag_facet_and_kind(
    kind: str, added: list[str]
) -> None:
    """A person could put `bug` (feedback_type, for feedback) on a blog post."""
    wrong = added[-1]
    other = "feedback" if kind == "content" else "content"
    message = f"tag\\(s\\) {wrong} \\(facet {TAGS[wrong].facet}, for {other} items\\) cannot be added to a {kind} item"
    with pytest.raises(CorrectionError, match=message):
        plan_correction(kind=kind, current=set(), added=added, removed=[], tags=TAGS)


def test_a_tag_of_a_facet_for_the_other_kind_can_still_be_removed() -> None:
    plan = plan_correction(kind="content", current={"bug", "awareness"}, added=["pricing"], removed=["bug"], tags=TAGS)

    assert plan.take_off == ("bug",)
    assert plan.after == ("awareness", "pricing")
    assert plan.labels == {"pricing": True, "bug": False}


def test_a_tag_of_a_facet_for_both_kinds_or_for_the_items_kind_is_added() -> None:
    plan = plan_correction(kind="feedback", current=set(), added=["bug", "pricing"], removed=[], tags=TAGS)

    assert plan.after == ("bug", "pricing")


def test_an_older_correction_is_checked_as_sent_even_when_a_later_decision_covers_the_wrong_tag() -> None:
    """Leaving out tags decided later must not let a wrong-kind tag through, nor hide the refusal."""
    with pytest.raises(CorrectionError, match=r"bug .* cannot be added to a content item"):
        plan_against_later_decisions(
            kind="content", current=set(), added=["bug", "pricing"], removed=[], tags=TAGS, decided={"bug"}
        )
