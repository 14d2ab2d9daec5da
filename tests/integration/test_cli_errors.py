"""What the CLI prints when the database or Redis is missing, unmigrated or fed odd input: one line, no traceback."""

from __future__ import annotations

import random
import string
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.helpers import scratch_database
from worker.db import get_engine
from worker.processes import service_env
from worker.services import ServiceUrls
from worker.store.model_versions import register_model_version

pytestmark = [pytest.mark.integration]

UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


@pytest.fixture
def unmigrated_db(stack: ServiceUrls) -> Iterator[str]:
    """A database that exists but has never seen `tagworker migrate`."""
    yield from scratch_database(stack.database_url, prefix="cli", migrated=False)


@pytest.fixture
def own_db(stack: ServiceUrls) -> Iterator[str]:
    yield from scratch_database(stack.database_url, prefix="cli")


def tagworker(
    *args: str, database_url: str, broker_url: str, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = service_env(ServiceUrls(database_url=database_url, broker_url=broker_url), extra_env)
    return subprocess.run([sys.executable, "-m", "worker.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [["status"], ["cluster", "show"], ["model", "rollback"], ["model", "promote", "99"],
     ["db", "grant-dashboard", "metabase"]],
)  # fmt: skip
def test_an_unmigrated_database_says_run_migrate(unmigrated_db: str, stack: ServiceUrls, args: list[str]) -> None:
    result = tagworker(*args, database_url=unmigrated_db, broker_url=stack.broker_url)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "has no tagworker schema" in result.stderr and "run `tagworker migrate`" in result.stderr, result.stderr


def test_status_with_redis_unreachable_names_redis(stack: ServiceUrls) -> None:
    result = tagworker("status", database_url=stack.database_url, broker_url=UNREACHABLE_REDIS)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach Redis at {UNREACHABLE_REDIS}" in result.stderr, result.stderr


def test_an_unreachable_database_is_named_without_its_password(stack: ServiceUrls) -> None:
    secret = f"pw-{uuid.uuid4().hex}"
    url = f"postgresql+psycopg2://tagworker:{secret}@127.0.0.1:1/tagworker"
    for args in (
        ["status"],
        ["cluster", "show"],
        ["train", "pairs", "add", str(Path("samples/marketing-pairs.jsonl"))],
    ):
        result = tagworker(*args, database_url=url, broker_url=stack.broker_url)
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert "cannot connect to the database at postgresql+psycopg2://tagworker:***@127.0.0.1:1/tagworker" in (
            result.stderr
        ), result.stderr
        assert secret not in result.stdout + result.stderr


def test_a_repeated_pair_keeps_its_last_score(own_db: str, stack: ServiceUrls, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        '{"a": "open rate", "b": "OR", "score": 0.5}\n{"a": "CAC", "b": "acquisition cost", "score": 1}\n'
        '{"a": "open rate", "b": "OR", "score": 0.7}\n'
    )
    result = tagworker("train", "pairs", "add", str(pairs), database_url=own_db, broker_url=stack.broker_url)
    assert result.returncode == 0, result.stderr
    assert "stored 2 vocabulary pairs" in result.stderr, result.stderr
    with get_engine(own_db).connect() as conn:
        rows = conn.execute(text("SELECT a, b, score FROM training_pairs ORDER BY a")).all()
    assert [tuple(r) for r in rows] == [("CAC", "acquisition cost", 1.0), ("open rate", "OR", 0.7)]


def test_the_longest_phrases_allowed_fit_the_pair_index(own_db: str, stack: ServiceUrls, tmp_path: Path) -> None:
    rng = random.Random(0)  # random letters do not compress, so the index row is as large as it gets
    longest = ["".join(rng.choice(string.ascii_letters) for _ in range(1000)) for _ in range(2)]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(f'{{"a": "{longest[0]}", "b": "{longest[1]}", "score": 0.5}}\n')
    result = tagworker("train", "pairs", "add", str(pairs), database_url=own_db, broker_url=stack.broker_url)
    assert result.returncode == 0, result.stderr
    pairs.write_text(f'{{"a": "{longest[0]}x", "b": "y", "score": 0.5}}\n')
    result = tagworker("train", "pairs", "add", str(pairs), database_url=own_db, broker_url=stack.broker_url)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "pairs.jsonl:1: a is 1,001 bytes" in result.stderr, result.stderr


def _three_noise_points(database_url: str) -> None:
    """An active model version and three embedded feedback items, clustered as noise: enough to draw a map."""
    with get_engine(database_url).begin() as conn:
        version = register_model_version(conn, name="tiny", base_model="tiny", path=None, dims=3)
        for n, vector in enumerate(("[1,0,0]", "[0,1,0]", "[0,0,1]")):
            item = conn.scalar(
                text("INSERT INTO items (kind, external_id, event_id, content_sha256, text, metadata, occurred_at) "
                     "VALUES ('feedback', :x, gen_random_uuid(), '', 'text', '{}', now()) RETURNING id"),
                {"x": f"fb{n}"},
            )  # fmt: skip
            conn.execute(
                text("INSERT INTO embeddings (item_id, model_version_id, vector, chunks_total, chunks_used) "
                     "VALUES (:i, :v, CAST(:vec AS vector), 1, 1)"),
                {"i": item, "v": version, "vec": vector},
            )  # fmt: skip
            conn.execute(
                text(
                    "INSERT INTO cluster_members (item_id, cluster_id, similarity, method) VALUES (:i, NULL, 0, 'run')"
                ),
                {"i": item},
            )


def test_cluster_map_creates_the_directory_it_writes_into(own_db: str, stack: ServiceUrls, tmp_path: Path) -> None:
    _three_noise_points(own_db)
    out = tmp_path / "maps" / "june" / "feedback.png"
    result = tagworker("cluster", "map", "--out", str(out), database_url=own_db, broker_url=stack.broker_url)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"\x89PNG")
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    result = tagworker("cluster", "map", "--out", str(blocked / "x.png"), database_url=own_db,
                       broker_url=stack.broker_url)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write {blocked / 'x.png'}" in result.stderr and "--out" in result.stderr, result.stderr


def test_publish_with_redis_unreachable_names_redis(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"feedback_id": "f1", "text": "too expensive"}\n')
    result = tagworker("publish", str(events), "--kind", "feedback", database_url="postgresql+psycopg2://x@127.0.0.1:1/x",
                       broker_url=UNREACHABLE_REDIS)  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach Redis at {UNREACHABLE_REDIS}: Error 111" in result.stderr, result.stderr


def test_migrate_reports_a_missing_taxonomy_file_at_once(own_db: str, stack: ServiceUrls, tmp_path: Path) -> None:
    """migrate retried every error for 60 s, as if the database were still starting; only that is worth a wait."""
    missing = tmp_path / "taxonomy.yaml"
    started = time.monotonic()
    result = tagworker("migrate", database_url=own_db, broker_url=stack.broker_url,
                       extra_env={"TAGWORKER_TAGGING__TAXONOMY_FILE": str(missing)})  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot read taxonomy file {missing}" in result.stderr, result.stderr
    assert time.monotonic() - started < 30
