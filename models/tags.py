"""Tags: taxonomy versions, tags, human labels, the tags items carry, and fitted taggers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base


class TaxonomyVersion(Base):
    """One loaded taxonomy file; the highest id is current."""

    __tablename__ = "taxonomy_versions"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    document: Mapped[dict[str, Any]] = mapped_column(JSONB)
    loaded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tag(Base):
    """A tag; one dropped from the taxonomy is retired, never deleted, so human labels on it survive."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    facet: Mapped[str] = mapped_column(String(128))
    multi_label: Mapped[bool] = mapped_column(Boolean)
    description: Mapped[str] = mapped_column(Text, default="")
    taxonomy_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("taxonomy_versions.id"))
    retired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class TagRenameLog(Base):
    """A tag renamed in place by a taxonomy's `renamed_from`: its row (id, labels, tags) kept, its name changed.

    A rename is done once; a correction that still names the old tag is read as naming the tag under its new name.
    """

    __tablename__ = "tag_renames"
    __table_args__ = (Index("ix_tag_renames_old_name", "old_name"),)

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    tag_id: Mapped[int] = mapped_column(Integer, ForeignKey("tags.id"))
    old_name: Mapped[str] = mapped_column(String(128))
    new_name: Mapped[str] = mapped_column(String(128))
    taxonomy_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("taxonomy_versions.id"))
    renamed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ItemLabel(Base):
    """A person's latest decision that an item has (present) or has not a tag; the training data."""

    __tablename__ = "item_labels"

    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(Integer, ForeignKey("tags.id"), primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(String(2048))
    correction_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("tag_corrections.id", ondelete="CASCADE"))
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ItemTag(Base):
    """A tag an item carries now: from a person (source human) or from a tagger (source model)."""

    __tablename__ = "item_tags"
    __table_args__ = (
        CheckConstraint("source IN ('model', 'human')", name="source"),
        Index("ix_item_tags_tag_id_item_id", "tag_id", "item_id"),
    )

    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(Integer, ForeignKey("tags.id"), primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(8))
    head: Mapped[str] = mapped_column(String(16))
    tagger_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("taggers.id", ondelete="SET NULL"))
    model_version_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("model_versions.id"))
    tagged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ItemTagging(Base):
    """When an item was last tagged, by which tagger, and how close it came to a threshold (for review)."""

    __tablename__ = "item_tagging"
    __table_args__ = (Index("ix_item_tagging_margin", "margin"), Index("ix_item_tagging_tagged_at", "tagged_at"))

    item_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tagger_id: Mapped[int | None] = mapped_column(Integer, ForeignKey("taggers.id", ondelete="SET NULL"))
    margin: Mapped[float | None] = mapped_column(Float)
    tagged_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Tagger(Base):
    """Fitted heads for one taxonomy version and model version; the newest per model version is used."""

    __tablename__ = "taggers"

    id: Mapped[int] = mapped_column(Integer, Identity(), primary_key=True)
    taxonomy_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("taxonomy_versions.id"))
    model_version_id: Mapped[int] = mapped_column(Integer, ForeignKey("model_versions.id"), index=True)
    heads: Mapped[dict[str, Any]] = mapped_column(JSONB)
    labels_through: Mapped[int] = mapped_column(BigInteger, default=0)
    # The snapshot (`pg_snapshot` as text) the fit read the labels in; NULL on taggers from before migration 0010.
    labels_snapshot: Mapped[str | None] = mapped_column(Text)
    labelled_items: Mapped[int] = mapped_column(Integer, default=0)
    seconds: Mapped[float] = mapped_column(Float)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    fitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    retagged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
