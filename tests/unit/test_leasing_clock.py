"""Leasing with a fake clock: the trust window, renewal after expiry, hand-offs.

No database and no sleeps: the lease keepers work an in-memory book of
partitions that keeps the lease queries' rules (a lease is free once its
``lease_until`` has passed by database time; renewal is fenced by the owner;
a hand-off by the owner and ``steal_by``). The store suite proves those rules
on the three databases; here only time is under the test's control: the
clock moves when a test says so, or by ``rtt`` at each round trip.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest

from feedwatch import FeedSettings, WatcherSettings
from feedwatch.engine.leases import LeaseTable
from feedwatch.engine.leasing import LeaseKeeper
from feedwatch.engine.threads import DatabaseTrouble
from feedwatch.observability.logging import FeedLogger
from feedwatch.observability.metrics import Metrics
from feedwatch.store.records import LeaseRow

pytestmark = pytest.mark.unit
T = TypeVar("T")
EPOCH = datetime(2026, 1, 1)
SETTINGS = WatcherSettings(
    lease_duration=30, renew_interval=10, lease_margin=3, grace_period=5, health_port=0
)


class FakeClock:
    """Database time and monotonic time, both moved only by :meth:`advance`."""

    def __init__(self) -> None:
        self.t = 100.0
        self.syncs = 0

    def sync(self) -> None:
        self.syncs += 1

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds

    def at(self, when: datetime) -> float:
        """The monotonic reading at database time ``when``."""
        return (when - EPOCH).total_seconds()


@dataclass
class Row:
    pk: int
    id: str
    owner: str | None = None
    lease_until: datetime | None = None
    epoch: int = 0
    steal_by: str | None = None


class Book:
    """The partitions of one feed and its heartbeats, kept by the lease queries' rules."""

    def __init__(self, *ids: str) -> None:
        self.rows = {pk: Row(pk, pid) for pk, pid in enumerate(ids, start=1)}
        self.beats: dict[str, datetime] = {}
        self.settings = FeedSettings()

    def _mine(self, owner: str) -> list[LeaseRow]:
        return [
            LeaseRow(r.pk, r.id, "available", 0, r.epoch, r.lease_until or EPOCH, r.steal_by)
            for r in self.rows.values()
            if r.owner == owner
        ]

    def heartbeat(self, feed: str, owner: str, host: str, *, now: datetime, expires: datetime) -> None:
        self.beats[owner] = expires

    def remove_heartbeat(self, feed: str, owner: str) -> None:
        self.beats.pop(owner, None)

    def load_feed(self, name: str) -> FeedSettings:
        return self.settings

    def renew_leases(self, feed: str, owner: str, *, until: datetime) -> list[LeaseRow]:
        for row in self.rows.values():
            if row.owner == owner:
                row.lease_until = until
        return self._mine(owner)

    def acquire_leases(
        self, feed: str, owner: str, *, now: datetime, until: datetime, limit: int, history: bool
    ) -> list[LeaseRow]:
        free = [r for r in self.rows.values() if r.owner is None or (r.lease_until or now) < now][:limit]
        for row in free:
            row.owner, row.lease_until, row.epoch, row.steal_by = owner, until, row.epoch + 1, None
        return [r for r in self._mine(owner) if r.pk in {f.pk for f in free}]

    def hand_off(
        self, feed: str, owner: str, pk: int, *, to: str, now: datetime, until: datetime, history: bool
    ) -> bool:
        row = self.rows[pk]
        if row.owner != owner or row.steal_by != to:
            return False
        row.owner, row.lease_until, row.epoch, row.steal_by = to, until, row.epoch + 1, None
        return True

    def release_leases(self, feed: str, owner: str, pks: list[int], *, now: datetime, history: bool) -> int:
        mine = [self.rows[pk] for pk in pks if self.rows[pk].owner == owner]
        for row in mine:
            row.owner = row.lease_until = row.steal_by = None
        return len(mine)

    def count_balance(self, feed: str, now: datetime, *, cap: int) -> tuple[int, int]:
        live = max(sum(1 for expires in self.beats.values() if expires >= now), 1)
        return live, min(len(self.rows), cap * live)

    def owner_loads(self, feed: str, now: datetime) -> dict[str, int]:
        loads: dict[str, int] = {}
        for row in self.rows.values():
            if row.owner is not None and row.lease_until is not None and row.lease_until > now:
                loads[row.owner] = loads.get(row.owner, 0) + 1
        return loads

    def request_steal(self, feed: str, thief: str, victim: str) -> int | None:
        for row in self.rows.values():
            if row.owner == victim and row.steal_by is None:
                row.steal_by = thief
                return row.pk
        return None


class Keeper:
    """A lease keeper over the book; each store call is one round trip of ``rtt`` seconds."""

    def __init__(self, book: Book, clock: FakeClock, owner: str, *, rtt: float = 0.0) -> None:
        self.clock, self.rtt = clock, rtt
        self.actions: list[str] = []
        self.wakes = 0
        log = FeedLogger(logging.getLogger("feedwatch.test"), {"owner": owner})
        metrics = Metrics("f")
        self.leases = LeaseTable(log=log, metrics=metrics, on_drop=lambda: None)
        self.keeper = LeaseKeeper(
            store=book,
            feed="f",
            owner=owner,
            settings=SETTINGS,
            feed_settings=book.settings,
            clock=clock,
            leases=self.leases,
            run=self._round_trip,
            trouble=DatabaseTrouble(log=log, clock=clock, pause=0.01),
            log=log,
            metrics=metrics,
            stopping=lambda: False,
            on_change=self._woken,
        )

    async def _round_trip(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        self.clock.advance(self.rtt)
        return fn(*args, **kwargs)

    def _woken(self) -> None:
        self.wakes += 1

    def do(self, step: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.run(step())

    def held(self) -> list[str]:
        return sorted(lease.id for lease in self.leases.values())


def test_an_acquired_lease_is_trusted_until_margin_before_the_lease_until_written() -> None:
    book, clock = Book("p"), FakeClock()
    a = Keeper(book, clock, "a", rtt=0.4)
    a.do(a.keeper.balance)
    [lease] = a.leases.values()
    assert book.rows[1].lease_until is not None
    # Both clocks were read just before the acquiring round trip, after the balancing read.
    assert lease.trusted_until == clock.at(book.rows[1].lease_until) - SETTINGS.margin
    assert lease.trusted_until == 100.0 + 0.4 + SETTINGS.lease_duration - SETTINGS.margin
    assert a.wakes == 1, "an acquisition wakes the dispatcher"


def test_a_slow_renewal_only_shortens_the_trust_window() -> None:
    book, clock = Book("p"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.balance)
    [lease] = a.leases.values()
    clock.advance(10)
    a.rtt = 2.0  # sync, heartbeat, feed and renewal: 8 s on the way
    started = clock.monotonic()
    a.do(a.keeper.renew)
    assert clock.syncs == 1 and clock.monotonic() == started + 8
    assert lease.trusted_until == started + SETTINGS.lease_duration - SETTINGS.margin
    assert book.rows[1].lease_until is not None
    written_until = clock.at(book.rows[1].lease_until)
    assert lease.trusted_until < written_until - SETTINGS.margin, "measured from when the renewal started"


def test_a_lease_not_renewed_is_no_longer_trusted_once_its_window_passed() -> None:
    book, clock = Book("p"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.balance)
    [lease] = a.leases.values()
    clock.advance(SETTINGS.lease_duration - SETTINGS.margin - 0.5)
    assert lease.trusted(clock.monotonic())
    clock.advance(0.5)
    assert not lease.trusted(clock.monotonic()), "the dispatcher stops claiming at the window's end"
    assert a.held() == ["p"], "untrusted is not lost: the next renewal may still keep it"


def test_renewal_after_expiry_loses_the_lease_another_watcher_took() -> None:
    book, clock = Book("p"), FakeClock()
    a, b = Keeper(book, clock, "a"), Keeper(book, clock, "b")
    a.do(a.keeper.balance)
    clock.advance(SETTINGS.lease_duration + 1)  # a froze past its lease
    b.do(b.keeper.balance)
    assert b.held() == ["p"] and book.rows[1].epoch == 2, "an expired lease is free to take"
    a.do(a.keeper.renew)
    assert a.held() == [], "the renewal learns the lease is gone and drops it"
    assert book.rows[1].owner == "b"


def test_renewal_after_expiry_keeps_a_lease_nobody_took() -> None:
    book, clock = Book("p"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.balance)
    [lease] = a.leases.values()
    clock.advance(SETTINGS.lease_duration + 1)
    assert not lease.trusted(clock.monotonic())
    a.do(a.keeper.renew)
    assert a.held() == ["p"] and lease.trusted(clock.monotonic()), "trusted again from this renewal"
    assert book.rows[1].epoch == 1, "kept, not re-acquired: items claimed under it stay claimed"


def test_a_steal_is_honoured_above_target_only_after_the_partition_settled_then_handed_off() -> None:
    book, clock = Book("p", "q"), FakeClock()
    a, b = Keeper(book, clock, "a"), Keeper(book, clock, "b")
    a.do(a.keeper.renew)  # heartbeat
    a.do(a.keeper.balance)
    assert a.held() == ["p", "q"]
    b.do(b.keeper.renew)
    b.do(b.keeper.balance)  # target 1, nothing free: asks the most loaded owner
    assert b.held() == [] and [r.steal_by for r in book.rows.values()] == ["b", None]
    a.do(a.keeper.balance)  # a sees two watchers: its target drops to 1
    assert a.keeper.goal == 1
    a.do(a.keeper.renew)
    assert all(lease.handing_to is None for lease in a.leases.values()), "just acquired: not given yet"
    clock.advance(SETTINGS.renewal_period)
    a.do(a.keeper.renew)
    [giving] = [lease for lease in a.leases.values() if lease.handing_to is not None]
    assert (giving.id, giving.handing_to) == ("p", "b")
    a.do(a.keeper.hand_off_due)
    assert a.held() == ["q"] and book.rows[1].owner == "b"
    b.do(b.keeper.renew)
    assert b.held() == ["p"], "the thief adopts the partition at its next renewal"


def test_a_partition_just_received_is_not_handed_on_again() -> None:
    book, clock = Book("p", "q", "r"), FakeClock()
    b = Keeper(book, clock, "b")
    for row in book.rows.values():  # b received all three by hand-off a moment ago
        row.owner, row.lease_until, row.epoch = "b", clock.now() + timedelta(seconds=30), 2
    b.do(b.keeper.renew)
    b.keeper.goal = 1
    book.rows[1].steal_by = "a"
    b.do(b.keeper.renew)
    assert all(lease.handing_to is None for lease in b.leases.values()), "held 0 s: it moves no further"
    clock.advance(SETTINGS.renewal_period)
    b.do(b.keeper.renew)
    assert [lease.handing_to for lease in b.leases.values()] == ["a", None, None]


def test_a_watcher_at_its_target_ignores_a_steal_request() -> None:
    book, clock = Book("p"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.renew)
    a.do(a.keeper.balance)
    assert a.keeper.goal == 1
    clock.advance(SETTINGS.renewal_period)
    book.rows[1].steal_by = "b"
    a.do(a.keeper.renew)
    [lease] = a.leases.values()
    assert lease.handing_to is None and a.held() == ["p"], "one partition, at target: no ping-pong"


def test_a_hand_off_waits_for_items_in_flight_until_the_grace_period_ends() -> None:
    book, clock = Book("p", "q"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.balance)
    clock.advance(SETTINGS.renewal_period)
    a.keeper.goal = 1
    book.rows[1].steal_by = "b"
    a.do(a.keeper.renew)
    [giving] = [lease for lease in a.leases.values() if lease.handing_to == "b"]
    giving.in_flight = 1
    clock.advance(SETTINGS.grace_period - 0.5)
    a.do(a.keeper.hand_off_due)
    assert a.held() == ["p", "q"], "items in flight finish first"
    clock.advance(0.5)
    a.do(a.keeper.hand_off_due)
    assert a.held() == ["q"] and book.rows[1].owner == "b", "the grace period bounds the wait"


def test_a_hand_off_waits_for_a_claim_on_its_way() -> None:
    book, clock = Book("p", "q"), FakeClock()
    a = Keeper(book, clock, "a")
    a.do(a.keeper.balance)
    clock.advance(SETTINGS.renewal_period)
    a.keeper.goal = 1
    book.rows[1].steal_by = "b"
    a.do(a.keeper.renew)
    [giving] = [lease for lease in a.leases.values() if lease.handing_to == "b"]
    giving.claiming = True  # the dispatcher's claim went out before the steal was seen
    a.do(a.keeper.hand_off_due)
    assert a.held() == ["p", "q"], "what the claim wins starts here, never twice"
    giving.claiming = False
    a.do(a.keeper.hand_off_due)
    assert a.held() == ["q"] and book.rows[1].owner == "b"
