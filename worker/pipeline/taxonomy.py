"""The tag taxonomy: facets of tags, read from YAML or JSON and checked before anything is written."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from worker.errors import TaxonomyError


def _refuse(controls: str, allowed: str) -> Callable[[str], str]:
    """A check that a string has none of the `controls` characters (a regex class); `allowed` says what may be."""
    found = re.compile(controls).search

    def check(value: str) -> str:
        match = found(value)
        if match:
            raise PydanticCustomError(
                "control_character",
                "contains control character U+{code} at position {position}; {allowed}",
                {"code": f"{ord(match.group()):04X}", "position": match.start(), "allowed": allowed},
            )
        return value

    return check


# Control characters never belong in a taxonomy: a NUL cannot even be stored, and the others garble the terminal
# and the texts the zero-shot tagger embeds. Descriptions and examples may span lines and hold tabs.
_NO_CONTROLS = AfterValidator(_refuse(r"[\x00-\x1f]", "names are one line of printable text"))
_NO_CONTROLS_BUT_LINES = AfterValidator(
    _refuse(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "only tabs and line breaks may appear in text")
)
TagName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128), _NO_CONTROLS]
Text = Annotated[str, StringConstraints(max_length=2000), _NO_CONTROLS_BUT_LINES]
Example = Annotated[str, StringConstraints(min_length=1, max_length=2000), _NO_CONTROLS_BUT_LINES]
DEFAULT_TAXONOMY = Path(__file__).resolve().parent.parent / "data" / "taxonomy.yaml"


class TagSpec(BaseModel):
    """One tag; `examples` are short texts that carry it, used for cold start and as extra training examples.

    `renamed_from` lists names the tag had before: loading the file renames that tag in place, so its human labels,
    human tags and corrections carry over. The line may stay in the file; once the rename is done it does nothing.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TagName
    description: Text = ""
    examples: tuple[Example, ...] = ()
    renamed_from: tuple[TagName, ...] = ()


class FacetSpec(BaseModel):
    """A group of tags; a single-label facet gives an item at most one of its tags."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: TagName
    multi_label: bool = False
    description: Text = ""
    applies_to: tuple[Literal["content", "feedback"], ...] = Field(default=("content", "feedback"), min_length=1)
    tags: tuple[TagSpec, ...] = Field(min_length=1)


class Taxonomy(BaseModel):
    """All facets. Tag names are unique across the whole taxonomy, so a correction can name a tag alone."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Annotated[str, StringConstraints(max_length=128), _NO_CONTROLS] = "taxonomy"
    facets: tuple[FacetSpec, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> Taxonomy:
        facets = [f.name for f in self.facets]
        if len(set(facets)) != len(facets):
            raise ValueError(f"facet names appear twice: {sorted({f for f in facets if facets.count(f) > 1})}")
        tags = [t.name for f in self.facets for t in f.tags]
        if len(set(tags)) != len(tags):
            raise ValueError(f"tag names appear twice: {sorted({t for t in tags if tags.count(t) > 1})}")
        _check_renames(self)
        return self

    @property
    def renames(self) -> dict[str, tuple[str, ...]]:
        """Tag name -> the names it had before (`renamed_from`), for the tags that have any."""
        return {t.name: t.renamed_from for f in self.facets for t in f.tags if t.renamed_from}

    @property
    def tag_names(self) -> list[str]:
        return [t.name for f in self.facets for t in f.tags]

    def facet_of(self) -> dict[str, FacetSpec]:
        return {t.name: f for f in self.facets for t in f.tags}

    def document(self) -> dict[str, object]:
        """The taxonomy as stored: an empty `renamed_from` is left out, so files from before it existed keep their
        hash (the same file loaded again stays one version)."""
        data = self.model_dump(mode="json")
        for facet in data["facets"]:
            for tag in facet["tags"]:
                if not tag["renamed_from"]:
                    del tag["renamed_from"]
        return data

    @property
    def sha256(self) -> str:
        canonical = json.dumps(self.document(), sort_keys=True, ensure_ascii=True)
        return hashlib.sha256(canonical.encode()).hexdigest()


def _check_renames(taxonomy: Taxonomy) -> None:
    """Refuse `renamed_from` lists that cannot say which tag an old name becomes."""
    current = set(taxonomy.tag_names)
    claimed: dict[str, str] = {}
    for new, olds in taxonomy.renames.items():
        for old in olds:
            if old == new:
                raise ValueError(f"tag {new!r} lists its own name in renamed_from; remove it from the list")
            if old in current:
                raise ValueError(
                    f"tag {new!r} is renamed_from {old!r}, which is still a tag of this taxonomy; "
                    f"drop {old!r} from the file or from renamed_from"
                )
            if claimed.setdefault(old, new) != new:
                raise ValueError(
                    f"tags {claimed[old]!r} and {new!r} are both renamed_from {old!r}; one old tag becomes one new "
                    "tag: keep it in one renamed_from list"
                )


def parse_taxonomy(data: object, *, source: str = "taxonomy") -> Taxonomy:
    """A Taxonomy from parsed YAML/JSON, or a TaxonomyError that says what is wrong."""
    if not data:
        raise TaxonomyError(f"{source} is empty: it needs `facets:` with at least one facet of tags")
    try:
        return Taxonomy.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(data, e['loc'])}: {e['msg']}" for e in _causes(exc.errors())[:10])
        raise TaxonomyError(f"{source} is not a valid taxonomy: {problems}") from None


def parse_stored_taxonomy(document: object) -> Taxonomy:
    """A taxonomy stored before control characters were refused: they read back as spaces, not as an error.

    Tag and facet names never could hold them, so names and tags keep their identity.
    """
    return parse_taxonomy(_scrub(document), source="the stored taxonomy")


def _scrub(node: object) -> object:
    if isinstance(node, str):
        return re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", " ", node)
    if isinstance(node, dict):
        return {k: re.sub(r"[\x00-\x1f]", " ", v) if k == "name" and isinstance(v, str) else _scrub(v)
                for k, v in node.items()}  # fmt: skip
    return [_scrub(v) for v in node] if isinstance(node, list) else node


def _causes(errors: list[ErrorDetails]) -> list[ErrorDetails]:
    """The errors less a list's "too short" where its entries failed (pydantic counts only the valid ones)."""

    def counted_out(error: ErrorDetails) -> bool:
        loc = error["loc"]
        return error["type"] == "too_short" and any(
            len(o["loc"]) > len(loc) and o["loc"][: len(loc)] == loc for o in errors
        )

    return [e for e in errors if not counted_out(e)]


def _where(data: object, loc: tuple[int | str, ...]) -> str:
    """An error's place by the names in the file (`facet 'topic', tag 'seo', description`), not by position."""
    parts: list[str] = []
    node: object = data
    for key in loc:
        node = _child(node, key)
        name = node.get("name") if isinstance(node, dict) else None
        if isinstance(key, int) and parts and parts[-1] in ("facets", "tags") and isinstance(name, str):
            parts[-1] = f"{parts[-1].removesuffix('s')} {name!r}"
        elif isinstance(key, int) and parts:
            parts[-1] += f"[{key}]"
        else:
            parts.append(str(key))
    return ", ".join(parts) or "file"


def _child(node: object, key: int | str) -> object:
    if isinstance(node, dict):
        return node.get(key)
    return node[key] if isinstance(node, list | tuple) and isinstance(key, int) and 0 <= key < len(node) else None


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
