"""Search, similar and the retrieval eval against the embedded stack and the real model."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy import Engine, text

from tests.integration.helpers import content, count_items, feedback, publish, wait_for
from worker.errors import SearchError
from worker.processes import service_env
from worker.search import Searcher
from worker.services import ServiceUrls
from worker.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BEIR = Path(__file__).parent / "data" / "beir"


@pytest.fixture(scope="module")
def library(engine: Engine, producer, worker) -> dict[str, str]:  # type: ignore[no-untyped-def]
    events = {
        "spam": feedback("Our newsletters keep landing in the Gmail spam folder since Monday"),
        "price": feedback("The price increase on the growth plan is too steep for us"),
        "brief": content("Campaign brief: spring webinar on multi-touch attribution for B2B marketers",
                         content_id="search-brief-1"),
        "brief2": content("Brief for a webinar series about attribution models and last-click bias",
                          content_id="search-brief-2"),
    }  # fmt: skip
    publish(producer, list(events.values()))
    ids = [e["event_id"] for e in events.values()]
    wait_for(lambda: count_items(engine, ids) == len(ids), what="the search library")
    return {name: e.get("feedback_id") or e["content_id"] for name, e in events.items()}


@pytest.fixture(scope="module")
def searcher(stack: ServiceUrls) -> Searcher:
    return Searcher.from_settings(Settings())


def test_search_finds_the_item_closest_in_meaning(searcher: Searcher, library: dict[str, str]) -> None:
    # Other test modules store the bundled sample feedback too, which has its own spam complaints.
    hits = searcher.search("newsletters are going to the junk folder since Monday", kind="feedback", k=5)
    assert library["spam"] in [h.external_id for h in hits[:3]]
    assert all(h.kind == "feedback" for h in hits)
    assert hits[0].score > hits[-1].score


def test_hybrid_search_returns_fused_results(searcher: Searcher, library: dict[str, str]) -> None:
    hits = searcher.search("price increase on the growth plan", k=3, hybrid=True)
    assert library["price"] in [h.external_id for h in hits]


@pytest.fixture
def not_yet_embedded(engine: Engine) -> Iterator[str]:
    """An item with no vector under the active version, as during the backfill that follows a promotion."""
    external_id = f"no-vector-{uuid.uuid4().hex[:12]}"
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO items (kind, external_id, event_id, content_sha256, text, metadata, occurred_at) "
                "VALUES ('feedback', :x, gen_random_uuid(), '', 'The zorblax voucher was refused at checkout', "
                "'{}', now())"
            ),
            {"x": external_id},
        )
    yield external_id
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM items WHERE kind = 'feedback' AND external_id = :x"), {"x": external_id})


def test_hybrid_search_returns_only_items_with_a_vector_under_the_active_version(
    searcher: Searcher,
    engine: Engine,
    producer: Celery,
    worker: subprocess.Popen[bytes],
    not_yet_embedded: str,
) -> None:
    embedded = feedback("Our zorblax voucher code stopped working at checkout")
    publish(producer, [embedded])
    wait_for(lambda: count_items(engine, [embedded["event_id"]]) == 1, what="the embedded zorblax item")
    found = [h.external_id for h in searcher.search("zorblax voucher", k=5, hybrid=True)]
    assert embedded["feedback_id"] in found
    assert not_yet_embedded not in found


def test_a_tag_filter_keeps_only_items_with_that_tag(searcher: Searcher, library: dict[str, str]) -> None:
    wait_for(lambda: bool(searcher.search("price", k=5, tag="pricing")), what="the pricing tag on an item")
    hits = searcher.search("price increase", k=5, tag="pricing")
    assert library["price"] in [h.external_id for h in hits]
    assert library["spam"] not in [h.external_id for h in hits]


def test_similar_finds_the_other_brief_and_never_the_item_itself(searcher: Searcher, library: dict[str, str]) -> None:
    hits = searcher.similar(f"content/{library['brief']}", k=3)
    assert hits[0].external_id == library["brief2"]
    assert library["brief"] not in [h.external_id for h in hits]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.search("   "), "empty"),
        (lambda s: s.search("x", k=0), "between 1 and"),
        (lambda s: s.search("x", k=10**6), "between 1 and"),
        (lambda s: s.search("x", tag="no-such-tag"), "unknown tag"),
        (lambda s: s.similar("content/does-not-exist"), "unknown item"),
    ],
)
def test_bad_requests_get_a_clear_error(searcher: Searcher, library: dict[str, str], call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SearchError, match=message):
        call(searcher)


def test_cli_exits_non_zero_with_a_message(stack: ServiceUrls, library: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "similar", "content/nope"],
        env=service_env(stack), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert "unknown item" in result.stderr


def test_eval_retrieval_reproduces_the_hand_checked_case(stack: ServiceUrls) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli", "eval", "retrieval", "--corpus", str(BEIR / "corpus.jsonl"),
         "--queries", str(BEIR / "queries.jsonl"), "--qrels", str(BEIR / "qrels.tsv"), "--json"],
        env=service_env(stack), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    # Each judged query's relevant documents are the obvious ones; q3 has two, both must lead.
    assert (scores["ndcg10"], scores["mrr10"], scores["recall100"], scores["queries"]) == (1.0, 1.0, 1.0, 3)
