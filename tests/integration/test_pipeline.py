"""The pipeline end to end: producer -> Redis -> real Celery worker with the real model -> PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest
from sqlalchemy import Engine, text

from tests.integration.conftest import launch_worker, wait_ready
from tests.integration.helpers import content, count_items, feedback, publish, rejections, wait_for
from worker.processes import service_env, stop
from worker.services import ServiceUrls

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LONG_POST = " ".join(
    f"Section {i}: our lifecycle emails lift retention when onboarding nudges arrive on day {i}." for i in range(120)
)


def test_events_are_stored_with_unit_vectors_and_long_texts_are_chunked(engine: Engine, producer, worker) -> None:
    events = [
        content("Five subject lines that lifted our open rate", title="Subject lines", channel="email"),
        content(LONG_POST, title="Lifecycle playbook", channel="blog", campaign="q3-retention"),
        feedback("Your invoice charged us twice this month", source="support", rating=2),
    ]
    publish(producer, events)
    ids = [e["event_id"] for e in events]
    wait_for(lambda: count_items(engine, ids) == 3, what="3 items")
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT i.kind, i.channel, i.source, i.rating, e.vector, e.chunks_total, m.name, m.status "
                "FROM items i JOIN embeddings e ON e.item_id = i.id JOIN model_versions m ON m.id = e.model_version_id "
                "WHERE i.event_id::text = ANY(:ids) ORDER BY i.id"
            ),
            {"ids": ids},
        ).all()
    assert [r.kind for r in rows] == ["content", "content", "feedback"]
    assert rows[2].source == "support" and rows[2].rating == 2
    for row in rows:
        vector = row.vector.to_numpy()
        assert vector.shape == (384,)
        assert abs(float(np.linalg.norm(vector)) - 1) < 1e-3
        assert row.name.startswith("all-MiniLM-L6-v2@") and row.status == "active"
    assert rows[0].chunks_total == 1
    assert rows[1].chunks_total > 1, "a text past the model window must be split, not truncated"


def test_a_redelivered_or_resent_event_gives_one_row(engine: Engine, producer, worker) -> None:
    event = feedback("Checkout page loads slowly on mobile")
    publish(producer, [event, event, dict(event)])
    publish(producer, [event])
    wait_for(lambda: count_items(engine, [event["event_id"]]) == 1, what="the item")
    marker = feedback("a later event, to know the resends were processed")
    publish(producer, [marker])
    wait_for(lambda: count_items(engine, [marker["event_id"]]) == 1, what="the marker")
    with engine.connect() as conn:
        n = conn.execute(
            text("SELECT count(*) FROM items WHERE external_id = :x"), {"x": event["feedback_id"]}
        ).scalar_one()
    assert n == 1


def test_a_newer_event_for_the_same_item_replaces_it(engine: Engine, producer, worker) -> None:
    first = content("Spring sale: 20% off annual plans", occurred_at="2026-03-01T10:00:00Z")
    edited = dict(
        first, event_id=str(uuid.uuid4()), text="Spring sale: 25% off annual plans", occurred_at="2026-03-02T10:00:00Z"
    )
    publish(producer, [first])
    wait_for(lambda: count_items(engine, [first["event_id"]]) == 1, what="first version")
    publish(producer, [edited])
    wait_for(lambda: count_items(engine, [edited["event_id"]]) == 1, what="edited version")
    with engine.connect() as conn:
        rows = (
            conn.execute(text("SELECT text FROM items WHERE external_id = :x"), {"x": first["content_id"]})
            .scalars()
            .all()
        )
    assert rows == ["Spring sale: 25% off annual plans"]


BAD_INPUTS: list[tuple[object, str]] = [
    ("{not json", "not JSON"),
    ([1, 2, 3], "must be a JSON object"),
    ({"kind": "survey.answered", "text": "hi"}, "unknown event kind"),
    ({"text": "no kind at all"}, "unknown event kind None"),
    (feedback("x", text=None) | {"text": None}, "text"),
    (feedback("   "), "text is empty"),
    (feedback("a" * 100_001), "more than the limit"),
    (feedback("wrong type", rating="five stars"), "rating"),
    (feedback("extra field", clicks=3), "Extra inputs are not permitted"),
    (feedback("bad \udc80 utf-8"), "invalid UTF-8"),
    (feedback("deep", metadata={"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}), "nested deeper"),
    (feedback("bad id", event_id="not-a-uuid"), "event_id"),
    (feedback("nul \x00 inside"), "NUL"),
    (feedback("future schema", schema_version=2), "schema_version"),
]


def test_bad_inputs_land_in_rejected_events_while_good_events_are_stored(engine: Engine, producer, worker) -> None:
    good = [feedback(f"Great onboarding call number {i}") for i in range(3)]
    stream: list[object] = [good[0]] + [p for p, _ in BAD_INPUTS[:7]] + [good[1]] + [p for p, _ in BAD_INPUTS[7:]]
    stream.append(good[2])
    message_ids = publish(producer, stream)
    bad_ids = message_ids[1:8] + message_ids[9:-1]
    wait_for(lambda: len(rejections(engine, bad_ids)) == len(BAD_INPUTS), what="all rejections")
    wait_for(lambda: count_items(engine, [g["event_id"] for g in good]) == 3, what="good events")
    found = rejections(engine, bad_ids)
    for message_id, (_, expected) in zip(bad_ids, BAD_INPUTS, strict=True):
        status, reason = found[message_id]
        assert status == "invalid"
        assert expected in reason, f"{reason!r} should mention {expected!r}"
    with engine.connect() as conn:
        raw = conn.execute(
            text("SELECT raw FROM rejected_events WHERE message_id = :m"), {"m": bad_ids[0]}
        ).scalar_one()
    assert json.loads(raw) == "{not json", "the raw payload is kept"


def test_a_tag_correction_is_stored_and_one_for_an_unknown_item_is_rejected(engine: Engine, producer, worker) -> None:
    item = content("Webinar: attribution beyond last click", content_id=f"c-{uuid.uuid4().hex[:8]}")
    publish(producer, [item])
    wait_for(lambda: count_items(engine, [item["event_id"]]) == 1, what="the item")
    correction = {
        "kind": "tag.corrected",
        "event_id": str(uuid.uuid4()),
        "item": {"kind": "content", "external_id": item["content_id"]},
        "added": ["attribution"],
        "removed": ["brand"],
        "actor": "maria@brightloop.example",
    }
    unknown = dict(correction, event_id=str(uuid.uuid4()), item={"kind": "content", "external_id": "nope"})
    ids = publish(producer, [correction, correction, unknown])
    wait_for(lambda: len(rejections(engine, [ids[2]])) == 1, what="the unknown-item rejection")
    assert "unknown item content/nope" in rejections(engine, [ids[2]])[ids[2]][1]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT added, removed, actor FROM tag_corrections WHERE event_id = :e"), {"e": correction["event_id"]}
        ).all()
    assert [tuple(r) for r in rows] == [(["attribution"], ["brand"], "maria@brightloop.example")]


def test_killing_the_worker_mid_stream_loses_nothing(stack: ServiceUrls, data_dir, engine: Engine, producer) -> None:
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    first = launch_worker(stack, data_dir, "killed-worker", queue=queue)
    wait_ready(engine, producer, first, queue=queue)
    events = [feedback(f"Message {i} about deliverability and spam folders") for i in range(400)]
    ids = [e["event_id"] for e in events]
    publish(producer, events, queue=queue)
    wait_for(lambda: count_items(engine, ids) >= 40, what="the worker to be mid-stream")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    stored_at_kill = count_items(engine, ids)
    assert stored_at_kill < len(events), "the stream should still be running when the worker dies"
    second = launch_worker(stack, data_dir, "restarted-worker", queue=queue)
    try:
        wait_for(
            lambda: count_items(engine, ids) == len(events), timeout_s=240, what="every event after restart",
            log=data_dir / "restarted-worker.log",
        )  # fmt: skip
    finally:
        stop(second)
    with engine.connect() as conn:
        dupes = conn.execute(
            text("SELECT count(*) - count(DISTINCT external_id) FROM items WHERE event_id::text = ANY(:ids)"),
            {"ids": ids},
        ).scalar_one()
        rejected = conn.execute(
            text("SELECT count(*) FROM rejected_events WHERE event_id::text = ANY(:ids)"), {"ids": ids}
        ).scalar_one()
    assert dupes == 0 and rejected == 0


def test_the_worker_refuses_to_start_without_its_model(stack: ServiceUrls, tmp_path) -> None:
    env = service_env(stack, {"TAGWORKER_MODEL__NAME_OR_PATH": str(tmp_path / "missing-model")})
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "worker", "--queues", "never-used"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "TAGWORKER_MODEL__NAME_OR_PATH" in result.stderr


def test_status_reports_counts_without_secrets(stack: ServiceUrls, worker) -> None:
    env = service_env(stack, {"TAGWORKER_DATABASE__URL": stack.database_url})
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "status", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["active_model"].startswith("all-MiniLM-L6-v2@")
    assert status["items"]["feedback"] >= 1
    assert set(status["queue"]) == {"waiting", "unacked"}
