"""What a rejection row keeps of its payload."""

from __future__ import annotations

from worker.store.rejected import capped_raw, storable


def test_a_payload_up_to_the_limit_is_kept_whole() -> None:
    assert capped_raw("x" * 10, limit=10) == "x" * 10


def test_a_larger_payload_keeps_its_start_and_says_how_much_was_cut() -> None:
    """An over-limit event of 50 MB used to be written whole into rejected_events.raw."""
    assert capped_raw("a" * 25, limit=10) == "a" * 10 + "... [15 more characters not kept]"


def test_storable_escapes_nul_and_lone_surrogates() -> None:
    assert storable("a\x00b\ud800") == "a\\x00b\\ud800"
