"""The lease queries a watcher's balancing uses, straight against the store (every database).

``request_steal`` marks a partition for a thief, ``hand_off`` gives it over,
``release_leases`` lets partitions go, and ``owner_loads`` counts what each
live owner holds. Lease writes are fenced by the owner (and, for a hand-off,
by the steal request), never by the partition's version: a producer's enqueue
bumps the version and must not cost the owner its lease.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from feedwatch import Feed, Store
from feedwatch.store.records import HistoryRow, LeaseRow, PartitionRow

pytestmark = pytest.mark.store


def _acquire(store: Store, feed: Feed, owner: str, now: datetime, *, limit: int = 10) -> list[LeaseRow]:
    until = now + timedelta(seconds=30)
    return store.acquire_leases(feed.name, owner, now=now, until=until, limit=limit, history=True)


def _lease_history(store: Store, part: PartitionRow) -> list[HistoryRow]:
    return [h for h in store.history(part.pk) if h.event.startswith("lease_")]


def _expire(store: Store, part: PartitionRow, at: datetime) -> None:
    """Let a partition's lease run out at ``at`` (as if its owner stopped renewing)."""
    p = store.tables.partitions
    with store.engine.begin() as conn:
        conn.execute(update(p).where(p.c.pk == part.pk).values(lease_until=at))


# -- acquire_leases -------------------------------------------------------------


def test_one_acquire_takes_the_free_and_the_expired_partitions_and_leaves_live_leases(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("expired", {"a": 1})
    feed.enqueue("live", {"a": 1})
    now = store.now()
    assert len(_acquire(store, feed, "dead", now)) == 2
    dead, live = feed.partition("expired"), feed.partition("live")
    _expire(store, dead, now - timedelta(seconds=1))
    p = store.tables.partitions
    with store.engine.begin() as conn:  # "live" now belongs to a watcher that renews
        conn.execute(update(p).where(p.c.pk == live.pk).values(owner="alive"))
    feed.enqueue("free-1", {"a": 1})
    feed.enqueue("free-2", {"a": 1})
    epochs = {p.id: p.lease_epoch for p in feed.partitions()}

    taken = _acquire(store, feed, "w", store.now(), limit=10)

    by_id = {p.id: p for p in feed.partitions()}
    assert sorted(r.id for r in taken) == sorted(i for i in by_id if by_id[i].pk != live.pk)
    assert by_id[live.id].owner == "alive", "a live lease is not taken"
    for row in taken:
        assert by_id[row.id].owner == "w"
        assert row.lease_epoch == by_id[row.id].lease_epoch == epochs[row.id] + 1, "a new epoch each take"
    events = {p.id: _lease_history(store, p)[-1] for p in by_id.values() if p.owner == "w"}
    assert events[dead.id].event == "lease_taken" and events[dead.id].message == "expired lease of dead"
    assert {e.event for i, e in events.items() if i != dead.id} == {"lease_acquired"}


def test_watchers_acquiring_at_once_take_each_partition_exactly_once(feed: Feed, store: Store) -> None:
    """Many takers race over the same free partitions: each is won once, and its taker is told so."""
    for n in range(40):
        feed.enqueue(f"p{n}", {"a": n})
    now = store.now()
    start = threading.Barrier(6)
    won: dict[str, list[LeaseRow]] = {}

    def take(owner: str) -> None:
        start.wait()
        rows: list[LeaseRow] = []
        for _ in range(4):
            rows += _acquire(store, feed, owner, now, limit=8)
        won[owner] = rows

    threads = [threading.Thread(target=take, args=(f"w{n}",)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    told = [(owner, row.pk) for owner, rows in won.items() for row in rows]
    assert sorted(pk for _, pk in told) == sorted(p.pk for p in feed.partitions()), "each pk exactly once"
    assert {pk: owner for owner, pk in told} == {p.pk: p.owner for p in feed.partitions()}
    for part in feed.partitions():
        assert [h.event for h in _lease_history(store, part)] == ["lease_acquired"]


# -- request_steal ------------------------------------------------------------


def test_a_steal_request_marks_one_of_the_victims_partitions_for_the_thief(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("q", {"b": 1})
    now = store.now()
    _acquire(store, feed, "victim", now)
    before = {p.id: p for p in feed.partitions()}
    pk = store.request_steal(feed.name, "thief", "victim")
    after = {p.id: p for p in feed.partitions()}
    marked = [p for p in after.values() if p.steal_by is not None]
    assert [(p.pk, p.steal_by, p.owner) for p in marked] == [(pk, "thief", "victim")], (
        "one, still the victim's"
    )
    assert all(after[i].version == before[i].version for i in after), "a steal request writes no version"
    assert all(after[i].lease_epoch == before[i].lease_epoch for i in after)


def test_a_second_steal_request_takes_another_partition_and_none_is_left_after_that(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("q", {"b": 1})
    _acquire(store, feed, "victim", store.now())
    first = store.request_steal(feed.name, "thief-1", "victim")
    second = store.request_steal(feed.name, "thief-2", "victim")
    assert {first, second} == {p.pk for p in feed.partitions()}
    assert store.request_steal(feed.name, "thief-3", "victim") is None, "every partition already asked for"
    assert {p.steal_by for p in feed.partitions()} == {"thief-1", "thief-2"}, "no request overwritten"


def test_a_steal_request_from_a_watcher_that_holds_nothing_here_finds_nothing(
    feed: Feed, store: Store, feed_name: str
) -> None:
    feed.enqueue("p", {"a": 1})
    other = Feed.create(store, feed_name + "x")
    other.enqueue("p", {"a": 1})
    _acquire(store, other, "victim", store.now())
    assert store.request_steal(feed.name, "thief", "victim") is None, (
        "its leases in another feed do not count"
    )
    assert store.request_steal(feed.name, "thief", "nobody") is None
    assert [p.steal_by for p in other.partitions()] == [None]


def test_a_steal_request_finds_nothing_once_a_cancel_took_the_victims_lease(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    _acquire(store, feed, "victim", store.now())
    feed.cancel("p")
    assert store.request_steal(feed.name, "thief", "victim") is None
    assert feed.partition("p").steal_by is None


# -- hand_off -------------------------------------------------------------------


def test_a_hand_off_gives_the_partition_to_the_thief_under_a_new_epoch(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "victim", now)
    assert store.request_steal(feed.name, "thief", "victim") == lease.pk
    before = feed.partition("p")
    until = now + timedelta(seconds=45)
    assert store.hand_off(feed.name, "victim", lease.pk, to="thief", now=now, until=until, history=True)
    after = feed.partition("p")
    assert (after.owner, after.lease_until, after.steal_by) == ("thief", until, None)
    assert after.lease_epoch == before.lease_epoch + 1, "the thief claims under an epoch of its own"
    assert after.version == before.version, "a lease write never bumps the version"
    handed = _lease_history(store, after)[-1]
    assert (handed.event, handed.owner, handed.message) == ("lease_handed_off", "thief", "from victim")
    assert (handed.from_version, handed.gate, handed.to_status) == (before.version, 0, "available")
    assert [r.pk for r in store.renew_leases(feed.name, "thief", until=until)] == [lease.pk]
    assert store.renew_leases(feed.name, "victim", until=until) == [], "the victim holds it no more"


def test_a_hand_off_without_history_writes_no_history_row(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "victim", now)
    store.request_steal(feed.name, "thief", "victim")
    rows = len(store.history(lease.pk))
    assert store.hand_off(feed.name, "victim", lease.pk, to="thief", now=now, until=now, history=False)
    assert len(store.history(lease.pk)) == rows


def test_a_hand_off_by_a_watcher_that_does_not_hold_the_partition_is_refused(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "victim", now)
    store.request_steal(feed.name, "thief", "victim")
    before = feed.partition("p")
    history = store.history(lease.pk)
    until = now + timedelta(seconds=30)
    assert not store.hand_off(
        feed.name, "bystander", lease.pk, to="thief", now=now, until=until, history=True
    )
    assert feed.partition("p") == before, "nothing written"
    assert store.history(lease.pk) == history


def test_a_hand_off_to_a_watcher_that_did_not_ask_is_refused(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "victim", now)
    until = now + timedelta(seconds=30)
    assert not store.hand_off(feed.name, "victim", lease.pk, to="thief", now=now, until=until, history=True)
    store.request_steal(feed.name, "thief", "victim")
    assert not store.hand_off(feed.name, "victim", lease.pk, to="other", now=now, until=until, history=True)
    part = feed.partition("p")
    assert (part.owner, part.steal_by, part.lease_epoch) == ("victim", "thief", lease.lease_epoch)
    assert [h.event for h in _lease_history(store, part)] == ["lease_acquired"]


def test_a_hand_off_of_a_partition_that_does_not_exist_is_refused(feed: Feed, store: Store) -> None:
    now = store.now()
    missing = 2**31 - 1
    assert not store.hand_off(feed.name, "victim", missing, to="thief", now=now, until=now, history=True)
    assert store.history(missing) == []


def test_a_hand_off_is_not_fenced_by_the_version_an_enqueue_moved(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "victim", now)
    store.request_steal(feed.name, "thief", "victim")
    requested = feed.partition("p").version
    feed.enqueue("p", {"b": 2})  # a producer bumps the version in between
    assert feed.partition("p").version == requested + 1
    until = now + timedelta(seconds=30)
    assert store.hand_off(feed.name, "victim", lease.pk, to="thief", now=now, until=until, history=True)
    assert feed.partition("p").owner == "thief"
    assert _lease_history(store, feed.partition("p"))[-1].from_version == requested + 1


# -- release_leases -------------------------------------------------------------


def test_releasing_leases_clears_them_and_records_each_release(feed: Feed, store: Store) -> None:
    for name in ("p", "q", "r"):
        feed.enqueue(name, {"a": 1})
    now = store.now()
    leases = {lease.id: lease for lease in _acquire(store, feed, "w1", now)}
    store.request_steal(feed.name, "thief", "w1")
    before = {p.id: p for p in feed.partitions()}
    released = store.release_leases(feed.name, "w1", [leases["p"].pk, leases["q"].pk], now=now, history=True)
    assert released == 2
    after = {p.id: p for p in feed.partitions()}
    for name in ("p", "q"):
        assert (after[name].owner, after[name].lease_until, after[name].steal_by) == (None, None, None)
        assert (after[name].version, after[name].lease_epoch) == (
            before[name].version,
            before[name].lease_epoch,
        ), "a release bumps neither the version nor the epoch"
        last = _lease_history(store, after[name])[-1]
        assert (last.event, last.owner, last.from_version, last.at) == (
            "lease_released",
            "w1",
            before[name].version,
            now,
        )
    assert after["r"].owner == "w1", "a partition not named keeps its lease"
    assert [r.id for r in store.renew_leases(feed.name, "w1", until=now + timedelta(seconds=30))] == ["r"]
    assert {r.id for r in _acquire(store, feed, "w2", now)} == {"p", "q"}, "others may take them at once"


def test_releasing_partitions_another_watcher_holds_changes_nothing_of_theirs(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("q", {"b": 1})
    now = store.now()
    [p_lease] = _acquire(store, feed, "w1", now, limit=1)
    [q_lease] = _acquire(store, feed, "w2", now, limit=1)
    count = store.release_leases(feed.name, "w1", [p_lease.pk, q_lease.pk], now=now, history=True)
    assert count == 1, "only its own lease"
    owners = {p.pk: p.owner for p in feed.partitions()}
    assert owners == {p_lease.pk: None, q_lease.pk: "w2"}
    assert [h.event for h in _lease_history(store, feed.partition(q_lease.id))] == ["lease_acquired"]


def test_releasing_nothing_or_a_missing_partition_releases_nothing(feed: Feed, store: Store) -> None:
    now = store.now()
    assert store.release_leases(feed.name, "w1", [], now=now, history=True) == 0
    assert store.release_leases(feed.name, "w1", [2**31 - 1], now=now, history=True) == 0


def test_releasing_without_history_writes_no_history_row(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    now = store.now()
    [lease] = _acquire(store, feed, "w1", now)
    rows = len(store.history(lease.pk))
    assert store.release_leases(feed.name, "w1", [lease.pk], now=now, history=False) == 1
    assert feed.partition("p").owner is None
    assert len(store.history(lease.pk)) == rows


# -- owner_loads ------------------------------------------------------------------


def test_owner_loads_count_the_live_leases_of_each_owner_in_the_feed(
    feed: Feed, store: Store, feed_name: str
) -> None:
    for n in range(5):
        feed.enqueue(f"p{n}", {"a": 1})
    other = Feed.create(store, feed_name + "x")
    other.enqueue("p", {"a": 1})
    now = store.now()
    _acquire(store, feed, "w1", now, limit=3)
    _acquire(store, feed, "w2", now, limit=1)
    _acquire(store, other, "w3", now)
    assert store.owner_loads(feed.name, now) == {"w1": 3, "w2": 1}, "no free partition, no other feed"
    assert store.owner_loads(other.name, now) == {"w3": 1}


def test_owner_loads_leave_out_expired_leases_and_leases_a_cancel_ended(feed: Feed, store: Store) -> None:
    for name in ("p", "q", "r"):
        feed.enqueue(name, {"a": 1})
    now = store.now()
    _acquire(store, feed, "w1", now)
    _expire(store, feed.partition("q"), now - timedelta(seconds=1))
    feed.cancel("r")
    assert store.owner_loads(feed.name, now) == {"w1": 1}
    assert store.owner_loads(feed.name, now + timedelta(seconds=31)) == {}, "all expired by then"


def test_owner_loads_of_a_feed_nobody_holds_are_empty(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    assert store.owner_loads(feed.name, store.now()) == {}
