"""A reload that makes a facet single-label: items with two of its human tags are reported, and fixed by a correction.

The first test runs in a transaction that is rolled back; the CLI test has a database of its own.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.orm import Session

from tests.integration.helpers import scratch_database
from tests.integration.test_tag_renames import (
    Edit,
    correct,
    default_with,
    facet,
    load,
    new_item,
    rename,
    session,
)
from worker.db import get_engine
from worker.processes import service_env
from worker.services import ServiceUrls
from worker.store.review import single_label_conflicts

pytestmark = pytest.mark.integration
_ = session  # the fixture


def single_label(name: str) -> Edit:
    def edit(data: dict[str, Any]) -> None:
        facet(data, name)["multi_label"] = False

    return edit


def tone(*, multi_label: bool) -> Edit:
    """A facet of its own, so that items other tests left in the shared database do not count."""

    def edit(data: dict[str, Any]) -> None:
        data["facets"].append(
            {"name": "tone", "multi_label": multi_label, "tags": [{"name": "warm"}, {"name": "cold"}]}
        )

    return edit


def test_a_reload_that_makes_a_facet_single_label_reports_items_with_two_of_its_tags(session: Session) -> None:
    load(session, default_with(tone(multi_label=True)))
    both = new_item(session)
    correct(session, both, added=["warm", "cold"])
    correct(session, new_item(session), added=["warm"])
    assert [c.facet for c in single_label_conflicts(session)] == []

    load(session, default_with(tone(multi_label=False)))

    [conflict] = [c for c in single_label_conflicts(session) if c.facet == "tone"]
    ref = session.scalar(text("SELECT kind || '/' || external_id FROM items WHERE id = :i"), {"i": both})
    assert (conflict.items, conflict.examples) == (1, [ref])
    assert correct(session, both, added=["cold"]) == ["cold"], "keeping one tag takes the other off"
    assert [c.facet for c in single_label_conflicts(session)] == []


@pytest.fixture
def own_db(stack: ServiceUrls) -> Iterator[str]:
    yield from scratch_database(stack.database_url, prefix="renames")


def test_tags_load_says_what_it_renamed_and_which_items_need_a_person(
    own_db: str, stack: ServiceUrls, tmp_path: Path
) -> None:
    with Session(get_engine(own_db)) as session:
        item_id = new_item(session)
        correct(session, item_id, added=["praise", "bug"])
        ref = session.scalar(text("SELECT kind || '/' || external_id FROM items WHERE id = :i"), {"i": item_id})
        session.commit()
    path = tmp_path / "renamed.yaml"
    path.write_text(yaml.safe_dump(default_with(rename("praise", "compliment"), single_label("feedback_type"))))
    env = service_env(ServiceUrls(database_url=own_db, broker_url=stack.broker_url))

    def tagworker(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    first = tagworker("tags", "load", str(path))
    assert first.returncode == 0, first.stderr
    assert "renamed tag 'praise' to 'compliment'; its labels and tags carry over" in first.stderr
    review = f"review: 1 item(s) have two or more human tags of single-label facet 'feedback_type' (e.g. {ref})"
    assert review in first.stderr
    again = tagworker("tags", "load", str(path))
    assert again.returncode == 0 and "unchanged" in again.stderr and "renamed tag" not in again.stderr
    assert review in again.stderr, "still there until someone corrects the item"
