"""pgvector before 0.8 and Redis before 6.2 are refused with one line naming both versions and the fix."""

from __future__ import annotations

import re

import pytest

from worker.server_versions import PGVECTOR_REQUIRED, at_least, parse_version, pgvector_problem, redis_problem


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("0.8.0", (0, 8, 0)), ("0.7.4", (0, 7, 4)), ("6.2", (6, 2)), ("7.4.0-rc1", (7, 4, 0)), ("10", (10,))],
)
def test_versions_parse_by_their_numbers(text: str, parsed: tuple[int, ...]) -> None:
    assert parse_version(text) == parsed


def test_a_version_without_a_number_is_refused() -> None:
    with pytest.raises(ValueError, match="'unknown' is not a version number"):
        parse_version("unknown")


@pytest.mark.parametrize(
    ("found", "new_enough"),
    [("0.8.0", True), ("0.8", True), ("0.10.0", True), ("1.0.0", True), ("0.7.4", False), ("0.7", False)],
)
def test_versions_compare_as_numbers_not_strings(found: str, new_enough: bool) -> None:
    """ "0.10.0" < "0.8.0" as strings; as versions it is newer."""
    assert at_least(found, PGVECTOR_REQUIRED) is new_enough


def test_a_new_enough_pgvector_passes() -> None:
    assert pgvector_problem(available="0.8.0", installed=None) is None
    assert pgvector_problem(available="0.8.1", installed="0.8.0") is None


@pytest.mark.parametrize(
    ("available", "installed", "message"),
    [
        (None, None, r"server has no pgvector extension; tagworker needs pgvector 0\.8\.0 or later: install it"),
        ("0.7.4", None, r"server offers pgvector 0\.7\.4; tagworker needs pgvector 0\.8\.0 or later: upgrade pgvector"),
        ("0.8.0", "0.7.0", r"pgvector 0\.7\.0 installed; .*0\.8\.0 or later: run `ALTER EXTENSION vector UPDATE`"),
        ("0.7.4", "0.7.0", r"pgvector 0\.7\.0 installed; .*: upgrade pgvector on the PostgreSQL server, then run"),
    ],
    ids=["absent", "old-on-server", "old-in-database", "old-everywhere"],
)  # fmt: skip
def test_an_old_or_missing_pgvector_gets_one_line_with_the_fix(
    available: str | None, installed: str | None, message: str
) -> None:
    problem = pgvector_problem(available=available, installed=installed)
    assert problem is not None and "\n" not in problem
    assert re.search(message, problem), problem


@pytest.mark.parametrize(
    ("version", "refused"), [("6.0.16", True), ("5.0.14", True), ("6.2.0", False), ("7.4.2", False)]
)
def test_redis_before_6_2_is_refused(version: str, refused: bool) -> None:
    problem = redis_problem(version)
    assert (problem is not None) is refused
    if problem:
        assert f"Redis {version}; tagworker needs Redis 6.2.0 or later" in problem
        assert "TAGWORKER_BROKER__URL" in problem


@pytest.mark.parametrize("version", ["", "unknown", "v"])
def test_a_redis_version_that_does_not_parse_does_not_stop_the_worker(version: str) -> None:
    """`parse_version` raised out of the worker_init hook: the worker died with a traceback."""
    assert redis_problem(version) is None


def test_a_leading_v_is_read() -> None:
    assert parse_version("v7.2.4") == (7, 2, 4)
    assert redis_problem("v6.0.9") is not None
