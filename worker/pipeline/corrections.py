"""What a human tag correction changes, decided before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import CorrectionError

ITEM_KINDS: tuple[str, ...] = ("content", "feedback")


@dataclass(frozen=True)
class TagInfo:
    """A tag's facet; a retired tag (dropped from the taxonomy) is in no facet any more and can only be taken off.

    `applies_to` is the item kinds the facet is for: a person may add its tags only to those.
    """

    facet: str
    multi_label: bool
    retired: bool = False
    applies_to: tuple[str, ...] = ITEM_KINDS


@dataclass(frozen=True)
class CorrectionPlan:
    """Tags to set as human, tags to take off, and the human labels to record (tag -> present)."""

    add: tuple[str, ...]
    take_off: tuple[str, ...]
    labels: dict[str, bool]
    before: tuple[str, ...]
    after: tuple[str, ...]


def plan_correction(
    *, kind: str, current: set[str], added: list[str], removed: list[str], tags: dict[str, TagInfo]
) -> CorrectionPlan:
    """Check a correction of an item of `kind` (content or feedback) against the taxonomy and its current tags.

    Adding a tag of a single-label facet takes the facet's other current tags off the item and records them as
    absent. Retired tags, and tags of a facet that does not apply to the item's kind, can be removed (people clean
    up) but not added.

    Raises:
        CorrectionError: unknown tags, retired tags or tags for the other kind added, a tag both added and
            removed, two tags added to one single-label facet, or nothing to do.
    """
    if not added and not removed:
        raise CorrectionError("a correction must add or remove at least one tag")
    unknown = sorted({t for t in [*added, *removed] if t not in tags})
    if unknown:
        raise CorrectionError(f"unknown tag(s) {', '.join(unknown)}; `tagworker tags list` shows the taxonomy")
    retired = sorted({t for t in added if tags[t].retired})
    if retired:
        raise CorrectionError(
            f"tag(s) {', '.join(retired)} retired from the taxonomy: they can be removed from an item but not added; "
            "`tagworker tags list` shows the current tags"
        )
    _refuse_other_kinds(kind, added, tags)
    both = sorted(set(added) & set(removed))
    if both:
        raise CorrectionError(f"tag(s) {', '.join(both)} both added and removed")
    seen: dict[str, str] = {}
    for tag in added:
        info = tags[tag]
        if not info.multi_label and seen.setdefault(info.facet, tag) != tag:
            raise CorrectionError(f"{seen[info.facet]} and {tag} are both in single-label facet {info.facet}")
    displaced = {
        other
        for tag in added
        if not tags[tag].multi_label
        for other in current
        if other != tag and other in tags and not tags[other].retired and tags[other].facet == tags[tag].facet
    }
    labels = {t: True for t in added} | {t: False for t in [*removed, *displaced]}
    after = (current - set(removed) - displaced) | set(added)
    return CorrectionPlan(
        add=tuple(dict.fromkeys(added)),
        take_off=tuple(sorted((set(removed) | displaced) & current)),
        labels=labels,
        before=tuple(sorted(current)),
        after=tuple(sorted(after)),
    )


def _refuse_other_kinds(kind: str, added: list[str], tags: dict[str, TagInfo]) -> None:
    """Raise when an added tag's facet is not for items of `kind` (a feedback type on a blog post)."""
    wrong = [t for t in dict.fromkeys(added) if kind not in tags[t].applies_to]
    if wrong:
        names = ", ".join(f"{t} (facet {tags[t].facet}, for {'/'.join(tags[t].applies_to)} items)" for t in wrong)
        raise CorrectionError(
            f"tag(s) {names} cannot be added to a {kind} item; a correction may still remove them. "
            f"Add tags of facets for {kind} items instead"
        )


def plan_against_later_decisions(
    *,
    kind: str,
    current: set[str],
    added: list[str],
    removed: list[str],
    tags: dict[str, TagInfo],
    decided: set[str],
) -> CorrectionPlan:
    """`plan_correction` for a correction that arrives after people decided on some of its tags again.

    Corrections are deltas, and the later decision about a tag wins in whatever order they arrive: those tags are
    left out, and so is what they displaced. A later decision on a tag of a single-label facet decided the whole
    facet (one tag at most), so the facet's other tags are left out too.

    Raises:
        CorrectionError: as `plan_correction`, for the correction as it was sent.
    """
    plan = plan_correction(kind=kind, current=current, added=added, removed=removed, tags=tags)
    facet_wide = {t: i for t, i in tags.items() if not i.multi_label and not i.retired}
    facets = {facet_wide[t].facet for t in decided if t in facet_wide}
    decided = decided | {t for t, info in facet_wide.items() if info.facet in facets}
    if not decided & set(plan.labels):
        return plan
    still = [t for t in added if t not in decided], [t for t in removed if t not in decided]
    if not any(still):
        return CorrectionPlan(add=(), take_off=(), labels={}, before=plan.before, after=plan.before)
    plan = plan_correction(kind=kind, current=current, added=still[0], removed=still[1], tags=tags)
    take_off = tuple(t for t in plan.take_off if t not in decided)
    return CorrectionPlan(
        add=plan.add,
        take_off=take_off,
        labels={t: present for t, present in plan.labels.items() if t not in decided},
        before=plan.before,
        after=tuple(sorted((set(plan.before) - set(take_off)) | set(plan.add))),
    )
