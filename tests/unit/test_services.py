"""redact(): connection URLs are shown without their passwords."""

from __future__ import annotations

import pytest

from worker.services import redact


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+psycopg2://tagworker:s3cret@db.internal:5432/tagworker",
            "postgresql+psycopg2://tagworker:***@db.internal:5432/tagworker",
        ),
        ("postgresql+psycopg2://app:p%40ss%2Fw0rd@db/tagworker", "postgresql+psycopg2://app:***@db/tagworker"),
        ("redis://:s3cret@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://default:s3cret@redis:6379/1", "redis://default:***@redis:6379/1"),
        ("rediss://:s3cret@cache.example:6380/0", "rediss://:***@cache.example:6380/0"),
    ],
)
def test_the_password_is_hidden(url: str, shown: str) -> None:
    assert redact(url) == shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",
        "postgresql+psycopg2://tagworker@db/tagworker",
        "postgresql://db.internal/tagworker",
        "not a url",
    ],
)
def test_a_url_without_a_password_is_unchanged(url: str) -> None:
    assert redact(url) == url


def test_a_password_containing_at_is_hidden_entirely() -> None:
    assert "ss@" not in redact("redis://:p@ss@localhost:6379/0")


@pytest.mark.parametrize(
    "url",
    ["unix:///run/redis.sock?db=0&password=s3cret", "postgresql+psycopg2:///tagworker?host=/run/pg&password=s3cret"],
    ids=["redis-unix-socket", "postgres-query"],
)
def test_a_password_in_the_query_is_hidden(url: str) -> None:
    assert "s3cret" not in redact(url)
