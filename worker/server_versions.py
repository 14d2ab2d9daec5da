"""The oldest pgvector and Redis tagworker works with, and the one-line refusal for older ones.

Older servers fail later with obscure errors: pgvector before 0.8 has no iterative HNSW scans
(`hnsw.iterative_scan`), Redis before 6.2 has no BLMOVE, which the worker's transport takes messages with.
"""

from __future__ import annotations

import re

PGVECTOR_REQUIRED = (0, 8, 0)
REDIS_REQUIRED = (6, 2, 0)


def parse_version(text: str) -> tuple[int, ...]:
    """`0.8.0` -> (0, 8, 0); a leading `v` and a part's trailing letters are dropped (`v7.4.0-rc1` -> (7, 4, 0))."""
    parts = []
    for part in text.strip().removeprefix("v").split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
    if not parts:
        raise ValueError(f"{text!r} is not a version number")
    return tuple(parts)


def at_least(found: str, required: tuple[int, ...]) -> bool:
    """Whether version `found` is `required` or newer (missing parts count as 0: `6.2` is 6.2.0)."""
    parsed = parse_version(found)
    width = max(len(parsed), len(required))
    return parsed + (0,) * (width - len(parsed)) >= required + (0,) * (width - len(required))


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def pgvector_problem(*, available: str | None, installed: str | None) -> str | None:
    """What is wrong with the database's pgvector, as one line with the fix; None when it is new enough.

    Args:
        available: the version `CREATE EXTENSION vector` would install (None: the server has no pgvector).
        installed: the version installed in this database (None: not installed yet).
    """
    need = f"tagworker needs pgvector {_dotted(PGVECTOR_REQUIRED)} or later"
    if installed is not None:
        if at_least(installed, PGVECTOR_REQUIRED):
            return None
        if available is not None and at_least(available, PGVECTOR_REQUIRED):
            return (f"the database has pgvector {installed} installed; {need}: run `ALTER EXTENSION vector UPDATE` "
                    f"in it as its owner (the server offers {available})")  # fmt: skip
        return (f"the database has pgvector {installed} installed; {need}: upgrade pgvector on the PostgreSQL "
                "server, then run `ALTER EXTENSION vector UPDATE` in the database")  # fmt: skip
    if available is None:
        return (f"the PostgreSQL server has no pgvector extension; {need}: install it on the server "
                "(e.g. the pgvector/pgvector image, or your provider's pgvector)")  # fmt: skip
    if not at_least(available, PGVECTOR_REQUIRED):
        return f"the PostgreSQL server offers pgvector {available}; {need}: upgrade pgvector on the server"
    return None


def redis_problem(version: str) -> str | None:
    """What is wrong with the broker's Redis version (`INFO server`'s redis_version); None when new enough.

    A version that does not parse (an empty field, a compatible server's own scheme) is not refused: the worker
    would rather start than die on a string it cannot read.
    """
    try:
        if at_least(version, REDIS_REQUIRED):
            return None
    except ValueError:
        return None
    return (f"the broker is Redis {version}; tagworker needs Redis {_dotted(REDIS_REQUIRED)} or later (its worker "
            "takes messages with BLMOVE): upgrade Redis, or point TAGWORKER_BROKER__URL at a newer one")  # fmt: skip
