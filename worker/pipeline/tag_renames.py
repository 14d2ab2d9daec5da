"""Which stored tags a taxonomy's `renamed_from` lists rename, decided before anything is written.

A rename keeps the tag's row (its id), so the human labels, human tags and corrections on it carry over to the new
name. Each rename done is logged as (old name, tag id); a file keeps its `renamed_from` lines for ever, and a
logged rename is never done twice, even when the old name was given to a new tag since.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.errors import TaxonomyError


@dataclass(frozen=True)
class TagRename:
    """The stored tag `tag_id`, named `old`, is to be named `new`."""

    tag_id: int
    old: str
    new: str


@dataclass(frozen=True)
class RenamePlan:
    """The renames to do, and the new tags whose `renamed_from` matched no stored tag (they start with no labels)."""

    renames: tuple[TagRename, ...]
    unmatched: dict[str, tuple[str, ...]]


def plan_renames(
    renames: dict[str, tuple[str, ...]], *, stored: dict[str, int], done: set[tuple[str, int]]
) -> RenamePlan:
    """Decide the renames of a taxonomy against the stored tags.

    Args:
        renames: new tag name -> its `renamed_from` names (`Taxonomy.renames`).
        stored: every stored tag, retired ones too: name -> id.
        done: the renames done before, as (old name, tag id).

    Raises:
        TaxonomyError: a tag would take over two stored tags, or its new name is a stored tag while an old name
            is another stored tag (that would merge two tags' labels).
    """
    todo, unmatched = [], {}
    for new, olds in renames.items():
        new_id = stored.get(new)
        # A logged (old, new_id) means the rename was done, and a stored tag of that name is a new one since.
        pending = [old for old in dict.fromkeys(olds) if old in stored and (old, new_id) not in done]
        if new_id is not None and pending:
            raise TaxonomyError(
                f"tag {new!r} cannot take over {_names(pending)} (renamed_from): {new!r} is a tag already, with "
                f"labels of its own, and merging tags is not supported; remove {_names(pending)} from its "
                "renamed_from, and correct the items by hand if needed"
            )
        if len(pending) > 1:
            raise TaxonomyError(
                f"tag {new!r} is renamed_from {_names(pending)}, which are all stored tags: it can take over one "
                "of them only (merging tags is not supported); keep one in renamed_from"
            )
        if pending:
            todo.append(TagRename(stored[pending[0]], pending[0], new))
        elif new_id is None:  # a fresh database, or a typo; once the tag is stored this is not said again
            unmatched[new] = olds
    return RenamePlan(tuple(todo), unmatched)


def _names(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
