"""Large enqueues: split by row count and payload size, every value intact (every database)."""

from __future__ import annotations

import json

import pytest

from feedwatch import Feed

pytestmark = pytest.mark.store


def test_a_large_enqueue_keeps_every_id_and_payload_exactly(feed: Feed) -> None:
    # 2,500 items (three statements of at most 1,000 rows), ids the drivers must escape,
    # and eight payloads of 300 kB that push statements past the payload bound.
    awkward = ["it's", 'say "hi"', "100%", "%(pk)s", "back\\slash", "ünïcødé", "semi;colon", "?"]
    items: dict[str, object] = {f"{awkward[n % len(awkward)]}-{n}": {"n": n} for n in range(2_492)}
    items.update({f"big-{n}": {"blob": "x" * 300_000, "n": n} for n in range(8)})
    result = feed.enqueue("p", items, gate=1)
    assert (result.added, result.unchanged) == (2_500, 0)
    stored = {row.id: row for row in feed.items("p", limit=10_000)}
    assert set(stored) == set(items)
    assert {row.gate for row in stored.values()} == {1}
    assert {row.status for row in stored.values()} == {"available"}
    wrong = [key for key, value in items.items() if json.loads(stored[key].data or b"null") != value]
    assert wrong == []
    again = feed.enqueue("p", items, gate=1)
    assert (again.added, again.unchanged) == (0, 2_500), "the same payloads again: a no-op"


def test_an_enqueue_of_only_known_items_inserts_nothing(feed: Feed) -> None:
    feed.enqueue("p", {"a": 1})
    result = feed.enqueue("p", {"a": 1})
    assert (result.added, result.unchanged) == (0, 1)
    assert [row.id for row in feed.items("p")] == ["a"]
