"""`tagworker cluster map`: the feedback in 2-D (PCA of the embeddings), coloured by theme, with labels.

A theme's label is its name when a person gave it one, else the automatic label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from worker.pipeline.cluster import unit_rows

_POINTS = text(
    """
    SELECT e.vector, m.cluster_id, coalesce(c.name, c.label) AS label
    FROM items i JOIN embeddings e ON e.item_id = i.id AND e.model_version_id = :v
    JOIN cluster_members m ON m.item_id = i.id LEFT JOIN clusters c ON c.id = m.cluster_id
    WHERE i.kind = 'feedback'
    ORDER BY random() LIMIT :n
    """
)


def draw_map(session: Session, *, model_version_id: int, out: Path, max_points: int = 5000, labels: int = 15) -> int:
    """Write a PNG; returns how many points it shows. Raises ValueError when nothing is clustered yet."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    rows = session.execute(_POINTS, {"v": model_version_id, "n": max_points}).all()
    if len(rows) < 3:
        raise ValueError("no clustered feedback yet: run `tagworker cluster run` first")
    vectors = unit_rows(np.stack([np.asarray(r.vector.to_numpy(), dtype=np.float32) for r in rows]))
    xy = PCA(n_components=2, random_state=0).fit_transform(vectors)
    ids = np.array([r.cluster_id if r.cluster_id is not None else -1 for r in rows])
    names = {r.cluster_id: r.label for r in rows if r.cluster_id is not None}
    fig, ax = plt.subplots(figsize=(12, 9), dpi=110)
    noise = ids == -1
    ax.scatter(xy[noise, 0], xy[noise, 1], s=6, c="#cccccc", linewidths=0)
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    size = 28 if len(rows) < 1000 else 8
    ordered = sorted(names, key=lambda c: -int((ids == c).sum()))
    for rank, cluster_id in enumerate(ordered):
        mask = ids == cluster_id
        ax.scatter(xy[mask, 0], xy[mask, 1], s=size, color=palette(rank % palette.N), linewidths=0)
        if rank < labels:
            cx, cy = np.median(xy[mask], axis=0)
            # parse_math off: a person's name such as "$5 plan vs $10 plan" is text, not a formula.
            ax.annotate(f"#{cluster_id} {names[cluster_id]}", (cx, cy), fontsize=8, ha="center", parse_math=False,
                        bbox={"boxstyle": "round,pad=0.2", "fc": "white", "alpha": 0.8, "lw": 0})  # fmt: skip
    ax.set_title(f"Feedback themes: {len(rows)} items, {len(names)} themes (grey: noise); 2-D PCA of the embeddings")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return len(rows)
