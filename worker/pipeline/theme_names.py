"""Names people give themes: checked before anything is written, so dashboards never show a garbled one."""

from __future__ import annotations

import re

from worker.errors import ThemeError

MAX_NAME = 256  # clusters.name
MAX_ACTOR = 2048  # clusters.named_by, as tag_corrections.actor
# One line of printable text: a NUL cannot even be stored, and the others garble terminals and dashboards.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_theme_name(raw: str) -> str:
    """The name trimmed of surrounding whitespace; raises ThemeError saying what to change."""
    name = raw.strip()
    if not name:
        raise ThemeError("the theme name is empty; give a name, or --clear to show the automatic label again")
    if len(name) > MAX_NAME:
        raise ThemeError(f"the theme name is {len(name)} characters; the most is {MAX_NAME}")
    _refuse_controls(name, what="the theme name")
    return name


def clean_actor(raw: str) -> str:
    """Who names the theme, trimmed; raises ThemeError when it is empty, too long or not one line."""
    actor = raw.strip()
    if not actor:
        raise ThemeError("--actor is empty; say who names the theme")
    if len(actor) > MAX_ACTOR:
        raise ThemeError(f"--actor is {len(actor)} characters; the most is {MAX_ACTOR}")
    _refuse_controls(actor, what="--actor")
    return actor


def _refuse_controls(value: str, *, what: str) -> None:
    found = _CONTROL.search(value)
    if found:
        raise ThemeError(
            f"{what} contains control character U+{ord(found.group()):04X} at position {found.start()}; "
            "names are one line of printable text"
        )
