"""What the database server offers: the pgvector extension's versions."""

from __future__ import annotations

from sqlalchemy import Connection, text


def vector_extension_versions(connection: Connection) -> tuple[str | None, str | None]:
    """(version `CREATE EXTENSION vector` would install, version installed in this database); None when absent."""
    row = connection.execute(
        text("SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'vector'")
    ).first()
    return (None, None) if row is None else (row[0], row[1])
