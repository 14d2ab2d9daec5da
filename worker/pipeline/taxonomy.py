"""The tag taxonomy: facets of tags, read from YAML or JSON and checked before anything is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from worker.errors import TaxonomyError

TagName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128, pattern=r"^[^\x00-\x1f]+$")
]
DEFAULT_TAXONOMY = Path(__file__).resolve().parent.parent / "data" / "taxonomy.yaml"


class TagSpec(BaseModel):
    """One tag; `examples` are short texts that carry it, used for cold start and as extra training examples."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TagName
    description: str = Field(default="", max_length=2000)
    examples: tuple[Annotated[str, StringConstraints(min_length=1, max_length=2000)], ...] = ()


class FacetSpec(BaseModel):
    """A group of tags; a single-label facet gives an item at most one of its tags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TagName
    multi_label: bool = False
    description: str = Field(default="", max_length=2000)
    applies_to: tuple[Literal["content", "feedback"], ...] = Field(default=("content", "feedback"), min_length=1)
    tags: tuple[TagSpec, ...] = Field(min_length=1)


class Taxonomy(BaseModel):
    """All facets. Tag names are unique across the whole taxonomy, so a correction can name a tag alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(default="taxonomy", max_length=128)
    facets: tuple[FacetSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Taxonomy:
        facets = [f.name for f in self.facets]
        if len(set(facets)) != len(facets):
            raise ValueError(f"facet names appear twice: {sorted({f for f in facets if facets.count(f) > 1})}")
        tags = [t.name for f in self.facets for t in f.tags]
        if len(set(tags)) != len(tags):
            raise ValueError(f"tag names appear twice: {sorted({t for t in tags if tags.count(t) > 1})}")
        return self

    @property
    def tag_names(self) -> list[str]:
        return [t.name for f in self.facets for t in f.tags]

    def facet_of(self) -> dict[str, FacetSpec]:
        return {t.name: f for f in self.facets for t in f.tags}

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def parse_taxonomy(data: object, *, source: str = "taxonomy") -> Taxonomy:
    """A Taxonomy from parsed YAML/JSON, or a TaxonomyError that says what is wrong."""
    if not data:
        raise TaxonomyError(f"{source} is empty: it needs `facets:` with at least one facet of tags")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {e['msg']}" for e in exc.errors()[:10])
        raise TaxonomyError(f"{source} is not a valid taxonomy: {problems}") from None


def read_taxonomy(path: Path) -> Taxonomy:
    """Read a taxonomy file (.yaml, .yml or .json)."""
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TaxonomyError(f"cannot read taxonomy file {path}: {exc}") from None
    try:
        data = json.loads(raw) if path.suffix == ".json" else yaml.safe_load(raw)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TaxonomyError(f"taxonomy file {path} does not parse: {str(exc).splitlines()[0]}") from None
    return parse_taxonomy(data, source=f"taxonomy file {path}")


def single_facet(name: str, tags: list[str], *, multi_label: bool) -> Taxonomy:
    """A taxonomy of one facet from bare tag names (what `eval tagging` uses without --taxonomy)."""
    return Taxonomy(facets=(FacetSpec(name=name, multi_label=multi_label, tags=tuple(TagSpec(name=t) for t in tags)),))


def humanize(name: str) -> str:
    """`card_arrival` -> `card arrival`; `paid-social` -> `paid social`."""
    return " ".join(name.replace("_", " ").replace("-", " ").split())


def prototype_texts(tag: TagSpec) -> list[str]:
    """Texts whose mean embedding stands for the tag before anyone labelled an item with it."""
    texts = [humanize(tag.name)]
    if tag.description:
        texts.append(f"{humanize(tag.name)}: {tag.description}")
    return texts + list(tag.examples)
