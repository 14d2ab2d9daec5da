"""Pure parts of retraining: pairs, batch order, the gate's decision, pair files, the held-out split."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from worker.errors import ConfigurationError
from worker.evaluation.retrain import same_tag_retrieval
from worker.pipeline.promotion_gate import decide
from worker.pipeline.tag_batches import distinct_tag_order
from worker.pipeline.training_pairs import read_scored_pairs, same_tag_pairs
from worker.retraining import split_holdout
from worker.store.training import LabelledItem


def test_same_tag_pairs_never_pair_a_text_with_itself_and_skip_lonely_tags() -> None:
    rows = [("a1", ["a"]), ("a2", ["a"]), ("a3", ["a"]), ("b1", ["b"]), ("c1", ["c"]), ("c2", ["c"])]
    pairs = same_tag_pairs(rows, per_text=5, max_pairs=100, seed=0)
    assert all(anchor != positive for anchor, positive, _ in pairs)
    assert {tag for _, _, tag in pairs} == {"a", "c"}
    assert len(pairs) == 3 * 2 + 2 * 1
    assert len(same_tag_pairs(rows, per_text=5, max_pairs=3, seed=0)) == 3


def test_a_text_with_two_tags_pairs_under_both() -> None:
    rows = [("pricing and churn", ["pricing", "churn"]), ("too expensive", ["pricing"]), ("we left", ["churn"])]
    pairs = same_tag_pairs(rows, per_text=5, max_pairs=100, seed=0)
    assert ("pricing and churn", "too expensive", "pricing") in pairs
    assert ("pricing and churn", "we left", "churn") in pairs
    assert len(pairs) == 4


def test_distinct_tag_order_keeps_tags_apart_within_a_batch() -> None:
    tags = [t for t in "abcdefgh" for _ in range(5)]
    order = distinct_tag_order(tags, 4, random.Random(0))
    assert sorted(order) == list(range(len(tags)))
    for start in range(0, len(order), 4):
        block = [tags[i] for i in order[start : start + 4]]
        assert len(block) == len(set(block)), block


@pytest.mark.parametrize(
    ("after", "promote", "why"),
    [
        ({"accuracy": 80.2, "ndcg10": 71.0}, False, "below the margin 0.5 and nDCG@10 gain +1.00 is below 2.0"),
        ({"accuracy": 85.0, "ndcg10": 60.0}, False, "nDCG@10 dropped 10.00"),
        ({"accuracy": 85.0, "ndcg10": 69.5}, True, "promoted (tags better)"),
        ({"accuracy": 80.0, "ndcg10": 80.0}, True, "promoted (retrieves better)"),
        ({"accuracy": 79.5, "ndcg10": 80.0}, False, "accuracy dropped 0.50 points (allowed 0.0)"),
    ],
)
def test_the_gate_wants_one_job_better_and_the_other_no_worse(after: dict[str, float], promote: bool, why: str) -> None:
    decision = decide(
        {"accuracy": 80.0, "ndcg10": 70.0}, after, min_gain=0.5, max_ndcg_drop=1.0, min_ndcg_gain=2.0,
        max_accuracy_drop=0.0,
    )  # fmt: skip
    assert decision.promote is promote and why in decision.reason


def test_pair_files_name_the_bad_line(tmp_path: Path) -> None:
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"a": "CAC", "b": "customer acquisition cost", "score": 1.0}\n\n')
    assert read_scored_pairs(good)[0].b == "customer acquisition cost"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "CAC", "b": "cost", "score": 1}\n{"a": "x", "b": "y", "score": 3}\n')
    with pytest.raises(ConfigurationError, match=r"bad\.jsonl:2: score 3\.0 is outside 0\.\.1"):
        read_scored_pairs(bad)


def test_the_holdout_is_stable_and_disjoint() -> None:
    items = [LabelledItem(i, f"text {i}", ["t"]) for i in range(1000)]
    train, holdout = split_holdout(items, 0.2)
    assert 150 < len(holdout) < 250 and not {i.item_id for i in train} & {i.item_id for i in holdout}
    assert [i.item_id for i in split_holdout(list(reversed(items)), 0.2)[1]] == sorted(
        (i.item_id for i in holdout), reverse=True
    )


def test_same_tag_retrieval_is_perfect_when_tags_are_separated() -> None:
    vectors = np.array([[1, 0], [0.99, 0.14], [0, 1], [0.14, 0.99]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert same_tag_retrieval(vectors, ["a", "a", "b", "b"]) == {"ndcg10": 100.0, "mrr": 100.0}


def test_one_text_under_several_ids_is_held_out_everywhere_or_nowhere() -> None:
    def key(text: str) -> str:
        return " ".join(text.lower().split())

    # The same feedback sent under other external ids (and re-typed with other case or spacing) is one text to
    # the model: a copy on each side would let the gate score texts the candidate was trained on.
    copies = [
        variant
        for n in range(200)
        for variant in (f"Ticket {n}: price up", f"TICKET {n}:  price up ", f"ticket {n}: price\nup")
    ]
    items = [LabelledItem(i, text, ["pricing"]) for i, text in enumerate(copies)]
    train, holdout = split_holdout(items, 0.2)
    assert train and holdout
    assert not {key(i.text) for i in train} & {key(i.text) for i in holdout}


def test_pair_files_refuse_a_phrase_too_long_for_the_index(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    fits = "é" * 500  # 1,000 bytes of UTF-8: the limit is in bytes, because the index limit is
    path.write_text(
        f'{{"a": "{fits}", "b": "x", "score": 1}}\n{{"a": "y", "b": "{"é" * 501}", "score": 1}}\n', encoding="utf-8"
    )
    with pytest.raises(ConfigurationError, match=r"long\.jsonl:2: b is 1,002 bytes of UTF-8 \(501 characters\)"):
        read_scored_pairs(path)
    path.write_text(f'{{"a": "{fits}", "b": "{fits}", "score": 1}}\n', encoding="utf-8")
    assert read_scored_pairs(path)[0].a == fits


@pytest.mark.parametrize("escape", ["\\ud800", "\\u0000"])
def test_pair_files_refuse_what_postgres_text_cannot_hold(tmp_path: Path, escape: str) -> None:
    path = tmp_path / "escapes.jsonl"
    path.write_text(f'{{"a": "ok", "b": "x{escape}y", "score": 1}}\n')
    with pytest.raises(ConfigurationError, match=r"escapes\.jsonl:1: b holds \\u0000 or half a surrogate pair"):
        read_scored_pairs(path)
