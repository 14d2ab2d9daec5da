"""The gate after fine-tuning: whether a candidate model replaces the active version, by held-out metrics."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GateDecision:
    """Whether a candidate replaces the active version, and why."""

    promote: bool
    reason: str


def decide(
    before: dict[str, float],
    after: dict[str, float],
    *,
    min_gain: float,
    max_ndcg_drop: float,
    min_ndcg_gain: float,
    max_accuracy_drop: float,
) -> GateDecision:
    """Promote a candidate that is better at one job and no worse at the other (metrics in percent points).

    Better at tagging: held-out accuracy gains `min_gain` and nDCG@10 drops at most `max_ndcg_drop`. Better at
    retrieval: nDCG@10 gains `min_ndcg_gain` and accuracy drops at most `max_accuracy_drop`.
    """
    gain = after["accuracy"] - before["accuracy"]
    ndcg_gain = after["ndcg10"] - before["ndcg10"]
    summary = (
        f"accuracy {before['accuracy']:.2f} -> {after['accuracy']:.2f}, "
        f"nDCG@10 {before['ndcg10']:.2f} -> {after['ndcg10']:.2f}"
    )
    if gain >= min_gain and ndcg_gain >= -max_ndcg_drop:
        return GateDecision(True, f"{summary}: promoted (tags better)")
    if ndcg_gain >= min_ndcg_gain and gain >= -max_accuracy_drop:
        return GateDecision(True, f"{summary}: promoted (retrieves better)")
    if gain >= min_gain:
        return GateDecision(False, f"{summary}: nDCG@10 dropped {-ndcg_gain:.2f} points (allowed {max_ndcg_drop})")
    if ndcg_gain >= min_ndcg_gain:
        return GateDecision(False, f"{summary}: accuracy dropped {-gain:.2f} points (allowed {max_accuracy_drop})")
    return GateDecision(
        False,
        f"{summary}: accuracy gain {gain:+.2f} is below the margin {min_gain} and nDCG@10 gain {ndcg_gain:+.2f} "
        f"is below {min_ndcg_gain}",
    )
