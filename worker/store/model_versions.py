"""Model versions, and the per-version HNSW index over their vectors."""

from __future__ import annotations

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.postgresql import insert

from models import ModelVersion

# Serializes version registration across workers; the number is arbitrary but fixed.
_REGISTER_LOCK = 7160403


def hnsw_index_name(model_version_id: int) -> str:
    return f"ix_embeddings_hnsw_v{model_version_id}"


def register_model_version(connection: Connection, *, name: str, base_model: str, path: str | None, dims: int) -> int:
    """The id of the named version, registering it (active if no version is) and its HNSW index when new.

    The `embeddings.vector` column has no fixed dimension, so each version's index casts to its own dimension
    and covers only its rows: `((vector::vector(dims)) vector_cosine_ops) WHERE model_version_id = id`.
    Searches must use the same cast and filter to hit it.
    """
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _REGISTER_LOCK})
    has_active = connection.scalar(select(ModelVersion.id).where(ModelVersion.status == "active").limit(1))
    connection.execute(
        insert(ModelVersion)
        .values(
            name=name,
            base_model=base_model,
            path=path,
            dims=dims,
            status="candidate" if has_active else "active",
            activated_at=None if has_active else text("now()"),
            metrics={},
            params={},
        )
        .on_conflict_do_nothing(index_elements=["name"])
    )
    version_id = int(connection.scalar(select(ModelVersion.id).where(ModelVersion.name == name)))  # type: ignore[arg-type]
    connection.exec_driver_sql(
        f"CREATE INDEX IF NOT EXISTS {hnsw_index_name(version_id)} ON embeddings "
        f"USING hnsw ((vector::vector({int(dims)})) vector_cosine_ops) WHERE model_version_id = {version_id}"
    )
    return version_id
