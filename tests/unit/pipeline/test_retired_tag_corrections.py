"""Corrections of tags the taxonomy retired: people can take them off an item, never put them on."""

from __future__ import annotations

import pytest

from worker.errors import CorrectionError
from worker.pipeline.corrections import TagInfo, plan_against_later_decisions, plan_correction

# `signup` was in the single-label facet `funnel` before the taxonomy dropped it.
TAGS = {
    "awareness": TagInfo("funnel", False),
    "conversion": TagInfo("funnel", False),
    "signup": TagInfo("funnel", False, retired=True),
    "bug": TagInfo("feedback_type", True),
    "praise": TagInfo("feedback_type", True, retired=True),
}


def test_a_retired_tag_can_be_removed_and_the_removal_is_recorded() -> None:
    plan = plan_correction(kind="feedback", current={"praise", "bug"}, added=[], removed=["praise"], tags=TAGS)

    assert plan.take_off == ("praise",)
    assert plan.labels == {"praise": False}
    assert plan.before == ("bug", "praise") and plan.after == ("bug",)


@pytest.mark.parametrize(("added", "removed"), [(["praise"], []), (["bug", "praise", "signup"], ["awareness"])])
def test_adding_a_retired_tag_is_refused_with_what_to_do(added: list[str], removed: list[str]) -> None:
    retired = ", ".join(sorted({"praise", "signup"} & set(added)))
    with pytest.raises(CorrectionError, match=f"tag\\(s\\) {retired} retired from the taxonomy: .* but not added"):
        plan_correction(kind="feedback", current={"awareness"}, added=added, removed=removed, tags=TAGS)


def test_adding_a_single_label_tag_leaves_a_retired_tag_of_its_old_facet() -> None:
    """A retired tag is in no facet any more: it goes only when a person removes it."""
    plan = plan_correction(
        kind="feedback", current={"awareness", "signup"}, added=["conversion"], removed=[], tags=TAGS
    )

    assert plan.take_off == ("awareness",)
    assert plan.after == ("conversion", "signup")


def test_a_later_decision_on_a_facet_does_not_swallow_an_older_removal_of_a_retired_tag() -> None:
    plan = plan_against_later_decisions(
        kind="content", current={"awareness", "signup"}, added=[], removed=["signup"], tags=TAGS, decided={"conversion"}
    )

    assert (plan.take_off, plan.labels, plan.after) == (("signup",), {"signup": False}, ("awareness",))
