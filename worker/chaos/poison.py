"""A poison text: the real embedder raises on any text that carries the marker, and only on those.

No real input makes the bundled model raise, so a chaos worker starts with a `sitecustomize` hook (on its
PYTHONPATH) that wraps `ModelEmbedder.embed`. Texts without the marker go to the real model
unchanged; the rest of the worker is the product code as shipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

POISON_MARKER = "tagworker-chaos-poison-6c1d"
_SITECUSTOMIZE = "from worker.chaos.poison import install\ninstall()\n"


class PoisonError(RuntimeError):
    """What the embedder raises on a poison text."""


def install() -> None:
    """Wrap the embedder so that a batch holding a poison text raises, as a model bug would."""
    from worker.pipeline.embed import ModelEmbedder

    real = ModelEmbedder.embed
    if getattr(real, "_chaos_poison", False):
        return

    def embed(self: ModelEmbedder, texts: list[str]) -> Any:
        if any(POISON_MARKER in t for t in texts):
            raise PoisonError("chaos poison text: the embedder refuses it")
        return real(self, texts)

    embed._chaos_poison = True  # type: ignore[attr-defined]
    ModelEmbedder.embed = embed  # type: ignore[method-assign]


def hook_dir(data_dir: Path) -> Path:
    """A directory holding the `sitecustomize.py` that calls `install()`; put it on a worker's PYTHONPATH."""
    path = data_dir / "chaos-hooks"
    path.mkdir(parents=True, exist_ok=True)
    (path / "sitecustomize.py").write_text(_SITECUSTOMIZE)
    return path
