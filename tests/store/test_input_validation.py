"""What the producer API refuses, and what it keeps exactly (issue 10, finding 7).

Everything here is refused before anything is written, with an error that
names the value and says how to fix it; the largest accepted values are
stored and read back on every database.
"""

from __future__ import annotations

import re
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, text, update

from feedwatch import ConfigurationError, Feed, FeedwatchError, PartitionNotFoundError, PayloadError, Store
from feedwatch.settings import MAX_DELAY

pytestmark = pytest.mark.store

CONTROL = ["\n", "\r", "\x00", "\t", "\x1b", "\x7f", "\x85"]


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_ids_with_a_control_character_are_refused_at_enqueue(feed: Feed, char: str) -> None:
    code = re.escape(f"U+{ord(char):04X}")
    with pytest.raises(PayloadError, match=rf"partition id .* control character \({code} at position 1\)"):
        feed.enqueue(f"p{char}x", {"a": 1})
    with pytest.raises(PayloadError, match=rf"item id .* control character \({code} at position 3\).*HTTP"):
        feed.enqueue("p", {"good": 1, f"bad{char}": 2})
    with pytest.raises(PartitionNotFoundError):
        feed.partition("p")  # nothing of the refused batch was written


def test_a_feed_name_with_a_control_character_is_refused(store: Store, feed_name: str) -> None:
    with pytest.raises(PayloadError, match=r"feed id .* control character \(U\+000A"):
        Feed.create(store, f"{feed_name}\n")


def test_ids_that_are_not_strings_are_refused_not_stored_as_reprs(feed: Feed) -> None:
    for bad in (None, {"k": 1}, ["a"], 5, True):
        with pytest.raises(PayloadError, match="item id must be a non-empty string"):
            feed.enqueue("p", [(bad, 1)])  # type: ignore[list-item]
    with pytest.raises(PayloadError, match="partition id must be a non-empty string"):
        feed.enqueue(None, {"a": 1})  # type: ignore[arg-type]


@pytest.mark.parametrize("gate", [True, False, -1, 2**31, 1.0, "1"])
def test_a_gate_that_is_not_a_32_bit_non_negative_integer_is_refused(feed: Feed, gate: Any) -> None:
    with pytest.raises(PayloadError, match=r"gate must be an integer from 0 to 2147483647"):
        feed.enqueue("p", {"a": 1}, gate=gate)
    feed.enqueue("q", {"a": 1})
    with pytest.raises(PayloadError, match=r"gate must be an integer from 0 to 2147483647"):
        feed.set_gate("q", gate)
    assert feed.partition("q").gate == 0


def test_the_largest_gate_is_stored_and_read_back(feed: Feed) -> None:
    top = 2**31 - 1
    assert feed.enqueue("p", {"a": 1}, gate=top).gate == top
    assert [(r.id, r.gate) for r in feed.items("p")] == [("a", top)]


def test_a_content_type_too_long_or_with_a_control_character_is_refused(feed: Feed) -> None:
    with pytest.raises(PayloadError, match="content type must be a non-empty string of at most 200"):
        feed.enqueue("p", {"a": b"x"}, content_type="a/" + "b" * 199)
    with pytest.raises(PayloadError, match=r"content type .* control character \(U\+000D"):
        feed.enqueue("p", {"a": b"x"}, content_type="text/plain\r\nX-Evil: 1")
    longest = "a/" + "b" * 198
    feed.enqueue("p", {"a": b"x"}, content_type=longest)
    assert [r.content_type for r in feed.items("p")] == [longest]


def test_an_aware_not_before_keeps_its_instant(feed: Feed, store: Store) -> None:
    due = store.now() + timedelta(hours=1)
    east = due.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=5, minutes=30)))
    feed.enqueue("p", {"a": 1}, not_before=east)
    [item] = feed.items("p")
    assert abs(item.next_attempt_at - due) < timedelta(seconds=1), (item.next_attempt_at, due)


def test_purge_refuses_a_negative_or_impossibly_long_age(feed: Feed) -> None:
    with pytest.raises(FeedwatchError, match="older_than must be a timedelta of 0 or more"):
        feed.purge(timedelta(seconds=-1))
    with pytest.raises(FeedwatchError, match="longer than feedwatch keeps anything"):
        feed.purge(timedelta(days=10**6))


def _fail(store: Store, feed: str, partition: str, item: str) -> None:
    """Mark one item failed, as the ``skip`` policy leaves it: its partition stays open."""
    i = store.tables.items
    pk = store.partition(feed, partition).pk
    with store.engine.begin() as conn:
        conn.execute(update(i).where(i.c.partition_pk == pk, i.c.id == item).values(status="failed"))


def test_retry_all_re_drives_only_the_given_feed(feed: Feed, store: Store, feed_name: str) -> None:
    other = Feed.create(store, f"{feed_name}o")
    for target in (feed, other):
        target.enqueue("p", {"a": 1, "b": 2})
        target.enqueue("gone", {"c": 3})
        target.cancel("gone")
        _fail(store, target.name, "p", "b")
    assert feed.retry() == 2
    assert {(r.id, r.status) for r in feed.iter_items("p")} == {("a", "available"), ("b", "available")}
    assert [r.status for r in other.iter_items("p")] == ["available", "failed"]
    assert [r.status for r in other.iter_items("gone")] == ["failed"]
    assert other.partition("gone").status == "failed"
    assert other.retry() == 2


def test_retry_all_reads_items_through_the_index_never_scanning_them(tmp_path: Any) -> None:
    """SQLite's query plan of every statement ``retry --all`` runs: items are searched by index."""
    from feedwatch import migrate

    url = f"sqlite:///{tmp_path / 'plan.db'}"
    migrate(url)
    store = Store.open(url)
    try:
        feed = Feed.create(store, "f")
        feed.enqueue("p", {"a": 1})
        _fail(store, "f", "p", "a")
        seen: list[tuple[str, Any]] = []
        event.listen(store.engine, "before_cursor_execute", lambda *a: seen.append((a[2], a[3])))
        assert feed.retry() == 1
        plans = []
        with store.engine.connect() as conn:
            for statement, params in seen:
                if statement.lstrip().upper().startswith("SELECT"):
                    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params).all()
                    plans.append(" | ".join(str(r[-1]) for r in rows))
        assert any("items" in plan for plan in plans), plans
        scans = [plan for plan in plans if "SCAN items" in plan]
        assert not scans, f"a statement scans every feed's items: {scans}"
        assert store.transaction(lambda c: c.execute(text("SELECT 1")).scalar()) == 1
    finally:
        store.close()


def test_feed_settings_past_their_columns_are_refused_and_nothing_is_written(
    store: Store, feed_name: str
) -> None:
    for changes in ({"max_retries": 2**40}, {"backoff_cap": 1e300}, {"poll_delay": float("nan")}):
        with pytest.raises(ConfigurationError, match="invalid feed settings"):
            Feed.create(store, feed_name, **changes)
    assert feed_name not in store.feed_names()
    feed = Feed.create(store, feed_name, backoff_cap=600.0)
    with pytest.raises(ConfigurationError, match="max_retries must be an integer of at most 2147483647"):
        feed.update(max_retries=2**31)
    assert (feed.settings.max_retries, feed.settings.backoff_cap) == (5, 600.0), (
        "the stored settings unchanged"
    )


def test_a_stored_delay_longer_than_a_week_is_read_as_a_week(feed: Feed, store: Store) -> None:
    """Rows written before delays were bounded still load (the engine cut such delays anyway)."""
    f = store.tables.feeds
    with store.engine.begin() as conn:
        conn.execute(update(f).where(f.c.name == feed.name).values(backoff_cap=1e9, poll_delay=1e7))
    settings = store.load_feed(feed.name)
    assert (settings.backoff_cap, settings.poll_delay) == (MAX_DELAY, MAX_DELAY)
