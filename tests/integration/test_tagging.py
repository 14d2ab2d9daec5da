"""Tagging against real PostgreSQL, Redis and a worker process: model tags, corrections, refit, taxonomy changes."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, text

from tests.integration.helpers import count_items, feedback, publish, rejections, wait_for
from worker.pipeline.taxonomy import DEFAULT_TAXONOMY
from worker.processes import service_env
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def item_tags(engine: Engine, kind: str, external_id: str) -> dict[str, tuple[str, str]]:
    """tag -> (source, head)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT g.name, it.source, it.head FROM item_tags it JOIN tags g ON g.id = it.tag_id "
                "JOIN items i ON i.id = it.item_id WHERE i.kind = :k AND i.external_id = :x"
            ),
            {"k": kind, "x": external_id},
        )
        return {name: (source, head) for name, source, head in rows}


def cli(stack: ServiceUrls, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args], env=service_env(stack), capture_output=True, text=True, timeout=300
    )


def correction(external_id: str, added: list[str], removed: list[str] | None = None) -> dict[str, Any]:
    return {
        "kind": "tag.corrected",
        "event_id": str(uuid.uuid4()),
        "item": {"kind": "feedback", "external_id": external_id},
        "added": added,
        "removed": removed or [],
        "actor": "qa@brightloop.example",
    }


def stored(engine: Engine, producer, events: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    publish(producer, events)
    ids = [e["event_id"] for e in events]
    wait_for(lambda: count_items(engine, ids) == len(ids), what="the items")


def test_new_items_are_tagged_zero_shot_from_the_default_taxonomy(engine: Engine, producer, worker) -> None:
    event = feedback("I was charged twice on my invoice this month and need a refund for the duplicate payment.")
    stored(engine, producer, [event])
    wait_for(lambda: bool(item_tags(engine, "feedback", event["feedback_id"])), what="model tags")
    tags = item_tags(engine, "feedback", event["feedback_id"])
    assert tags["billing"] == ("model", "zero-shot")
    assert not {"awareness", "email", "seo"} & set(tags), "content-only facets must not tag feedback"


def test_a_correction_takes_effect_at_once_and_bad_ones_are_rejected(engine: Engine, producer, worker) -> None:
    event = feedback("I was charged twice on my invoice this month; please refund the duplicate charge.")
    stored(engine, producer, [event])
    fid = event["feedback_id"]
    good = correction(fid, ["feature_request"], ["billing"])
    bad_tag = correction(fid, ["not_a_tag"])
    contradictory = correction(fid, ["bug"], ["bug"])
    ids = publish(producer, [good, bad_tag, contradictory])
    wait_for(lambda: len(rejections(engine, ids[1:])) == 2, what="two rejections")
    reasons = rejections(engine, ids[1:])
    assert "unknown tag(s) not_a_tag" in reasons[ids[1]][1]
    assert "both added and removed" in reasons[ids[2]][1]
    tags = item_tags(engine, "feedback", fid)
    assert tags["feature_request"] == ("human", "human") and "billing" not in tags
    with engine.connect() as conn:
        before, after = conn.execute(
            text("SELECT tags_before, tags_after FROM tag_corrections WHERE event_id = :e"), {"e": good["event_id"]}
        ).one()
    assert "billing" in before and "billing" not in after and "feature_request" in after


def test_refit_learns_from_corrections_and_never_overrides_people(engine: Engine, producer, worker) -> None:
    praise = [feedback(f"Quokka dashboards are wonderful, thank you team #{i}") for i in range(6)]
    bugs = [feedback(f"Quokka export throws error code {500 + i} and crashes") for i in range(6)]
    stored(engine, producer, praise + bugs)
    corrections = [correction(e["feedback_id"], ["praise"]) for e in praise]
    corrections += [correction(e["feedback_id"], ["bug"], ["praise"]) for e in bugs]
    ids = publish(producer, corrections)
    wait_for(lambda: _corrections_applied(engine, corrections), what="corrections applied")
    assert not rejections(engine, ids)
    producer.send_task("tagworker.refit_tags", queue="ingest")
    wait_for(lambda: _retagged_supervised(engine), timeout_s=120, what="a supervised tagger that re-tagged items")
    for e in praise:
        assert item_tags(engine, "feedback", e["feedback_id"])["praise"] == ("human", "human")
    for e in bugs:
        tags = item_tags(engine, "feedback", e["feedback_id"])
        assert "praise" not in tags, "a tag a person removed must not come back from the model"
    fresh = feedback("Quokka export throws error code 777 and crashes")
    stored(engine, producer, [fresh])
    wait_for(lambda: bool(item_tags(engine, "feedback", fresh["feedback_id"])), what="tags on a new item")
    assert item_tags(engine, "feedback", fresh["feedback_id"]).get("bug") == ("model", "supervised")


def _corrections_applied(engine: Engine, events: list[dict[str, Any]]) -> bool:
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM tag_corrections WHERE event_id::text = ANY(:e) AND applied_at IS NOT NULL"),
            {"e": [e["event_id"] for e in events]},
        ).scalar_one()
    return n == len(events)


def _retagged_supervised(engine: Engine) -> bool:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT heads, retagged_at FROM taggers ORDER BY id DESC LIMIT 1")).first()
    return row is not None and row.heads.get("feedback_type") == "supervised" and row.retagged_at is not None


def test_taxonomy_changes_keep_human_tags_and_bad_files_change_nothing(
    stack: ServiceUrls,
    engine: Engine,
    producer,
    worker,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    event = feedback("Please add an SMS channel, we would pay more for it.")
    stored(engine, producer, [event])
    publish(producer, [correction(event["feedback_id"], ["feature_request"])])
    wait_for(lambda: "feature_request" in item_tags(engine, "feedback", event["feedback_id"]), what="the human tag")
    default = yaml.safe_load(DEFAULT_TAXONOMY.read_text(encoding="utf-8"))
    smaller = dict(default, facets=[f for f in default["facets"] if f["name"] != "feedback_type"])
    path = tmp_path / "smaller.yaml"
    path.write_text(yaml.safe_dump(smaller), encoding="utf-8")
    broken = tmp_path / "broken.yaml"
    broken.write_text(yaml.safe_dump({"facets": [{"name": "a", "tags": [{"name": "x"}, {"name": "x"}]}]}))
    try:
        versions = _taxonomy_versions(engine)
        result = cli(stack, "tags", "load", str(broken))
        assert result.returncode == 2 and "tag names appear twice" in result.stderr
        assert _taxonomy_versions(engine) == versions
        assert cli(stack, "tags", "load", str(path)).returncode == 0
        with engine.connect() as conn:
            retired = conn.execute(text("SELECT retired_at IS NOT NULL FROM tags WHERE name = 'feature_request'"))
            assert retired.scalar_one()
        assert item_tags(engine, "feedback", event["feedback_id"])["feature_request"] == ("human", "human")
    finally:
        assert cli(stack, "tags", "load", str(DEFAULT_TAXONOMY)).returncode == 0


def _taxonomy_versions(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM taxonomy_versions")).scalar_one())


def test_cli_correct_show_and_review(stack: ServiceUrls, engine: Engine, producer, worker) -> None:
    event = feedback("The onboarding checklist was confusing and I could not find the import button.")
    stored(engine, producer, [event])
    ref = f"feedback/{event['feedback_id']}"
    result = cli(stack, "tag", "correct", ref, "--add", "usability", "--actor", "sam")
    assert result.returncode == 0, result.stderr
    assert "usability" in (result.stdout + result.stderr).split("->")[1]
    shown = cli(stack, "tag", "show", ref, "--json")
    assert any(r["tag"] == "usability" and r["source"] == "human" for r in json.loads(shown.stdout))
    missing = cli(stack, "tag", "correct", "feedback/does-not-exist", "--add", "bug")
    assert missing.returncode == 2 and "no single item" in missing.stderr
    review = cli(stack, "tag", "review", "--n", "5", "--json")
    assert review.returncode == 0, review.stderr
    listed = json.loads(review.stdout)
    assert 0 < len(listed) <= 5 and ref not in {f"{r['kind']}/{r['external_id']}" for r in listed}
