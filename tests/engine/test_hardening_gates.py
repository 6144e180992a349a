"""Hand-moved gates, suspects under load and the lease trust window (every database).

Issue 10, findings 4 and 5 and the trust window of an acquisition: the owner
sees a gate moved by hand at its next claim, a suspect runs alone within a
bounded time however busy the watcher is, and an acquired lease is never
trusted past the ``lease_until`` it wrote (minus the margin).
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from feedwatch import Feed, Item, Result, Store, Watcher
from feedwatch.store.records import ClaimRequest
from feedwatch.testing import RecordingProcessor, WatcherRunner, wait_for
from tests.engine.helpers import FAST

pytestmark = pytest.mark.engine


def lease_events(store: Store, feed: str, partition_pk: int) -> list[tuple[str, str | None]]:
    """The lease changes of one partition, oldest first: (event, owner)."""
    h = store.tables.history
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(h.c.event, h.c.owner)
            .where(h.c.feed == feed, h.c.partition_pk == partition_pk, h.c.event.like("lease%"))
            .order_by(h.c.pk)
        ).all()
    return [(r.event, r.owner) for r in rows]


@dataclass
class HeldAtGateOne:
    """Gate-1 items wait until ``release`` is set (at most 30 s); the rest complete at once."""

    release: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[str, int]] = field(default_factory=list)

    async def process(self, item: Item) -> Result:
        self.calls.append((item.id, item.gate))
        if item.gate == 1:
            await asyncio.to_thread(self.release.wait, 30)
        return Result.complete()


def test_a_gate_moved_back_by_hand_is_worked_at_once_not_after_the_old_gate_from_memory(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {f"late{n:02}": n for n in range(20)}, gate=1)
    processor = HeldAtGateOne()
    with WatcherRunner(store, feed.name, processor, replace(FAST, concurrency=2)):
        wait_for(lambda: len(processor.calls) == 2, timeout=30, message="two gate-1 calls in flight")
        # Both slots are busy, so nothing is claimed while the producer steers.
        assert feed.set_gate("p", 0) == 1
        assert feed.enqueue("p", {"first": 0}).gate == 0
        processor.release.set()
        wait_for(lambda: feed.partition("p").status == "complete", timeout=60, message="p complete")
    assert processor.calls[2] == ("first", 0), f"gate 1 went on from memory: {processor.calls[:5]}"
    assert all(gate == 1 for _, gate in processor.calls[3:]) and len(processor.calls) == 21
    pk = feed.partition("p").pk
    assert [e for e, _ in lease_events(store, feed.name, pk)] == ["lease_acquired"], "no lease churn"


@dataclass
class Staggered:
    """Completes items after 30-90 ms, staggered so that calls in flight never all end together."""

    calls: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def process(self, item: Item) -> Result:
        started = time.monotonic()
        await asyncio.sleep(0.03 + 0.02 * (len(self.calls) % 4))
        with self.lock:
            self.calls.append((f"{item.partition}/{item.id}", started, time.monotonic()))
        return Result.complete()

    def called(self, key: str) -> tuple[float, float] | None:
        with self.lock:
            return next(((s, e) for k, s, e in self.calls if k == key), None)


def test_a_suspect_runs_alone_within_a_bound_under_sustained_load_without_lease_churn(
    feed: Feed, store: Store
) -> None:
    # A watcher died with "suspect" in flight: its lease (1 s) will expire.
    feed.enqueue("s", {"suspect": 0, **{f"after{n:02}": n for n in range(10)}})
    now = store.now()
    [dead] = store.acquire_leases(
        feed.name, "dead-watcher", now=now, until=now + timedelta(seconds=1), limit=1, history=True
    )
    claimed = store.claim_batch(feed.name, "dead-watcher", [ClaimRequest(dead.pk, dead.lease_epoch, 0, 1)],
                                now=now, max_unanswered=3, history=True)  # fmt: skip
    assert [c.id for c in claimed.claimed[dead.pk]] == ["suspect"]
    # Sustained load: far more work than the test waits for the suspect.
    for p in range(4):
        feed.enqueue(f"busy{p}", {f"i{n:03}": n for n in range(150)})
    total = 4 * 150 + 11
    processor = Staggered()
    with WatcherRunner(store, feed.name, processor, replace(FAST, concurrency=8)):
        span = wait_for(lambda: processor.called("s/suspect"), timeout=30, message="the suspect ran")
        wait_for(lambda: feed.partition("s").status == "complete", timeout=60, message="s complete")
        with processor.lock:
            calls = list(processor.calls)
    started, ended = span
    overlapping = [k for k, s, e in calls if k != "s/suspect" and s < ended and e > started]
    assert overlapping == [], f"the suspect did not run alone: {overlapping[:5]}"
    backlog = total - sum(1 for _, s, _ in calls if s < started)
    print(f"suspect dispatched with {backlog} of {total} items still undispatched")
    assert backlog > 300, "the suspect waited for the load to drain"
    h = store.tables.history
    with store.engine.connect() as conn:
        at = dict(
            conn.execute(
                select(h.c.event, h.c.at).where(
                    h.c.feed == feed.name,
                    h.c.partition_pk == dead.pk,
                    h.c.event.in_(["lease_taken", "dispatched"]),
                    h.c.attempt.is_(None) | (h.c.attempt == 2),
                )
            ).all()
        )
    waited = (at["dispatched"] - at["lease_taken"]).total_seconds()
    print(f"suspect dispatched {waited:.3f} s after its partition was taken over")
    assert waited < 2.0, f"the suspect waited {waited:.3f} s after the takeover"
    events = lease_events(store, feed.name, dead.pk)
    assert [e for e, _ in events] == ["lease_acquired", "lease_taken"], f"lease churn: {events}"


class SteppingClock:
    """Database time is ``start`` plus the monotonic clock; every reading is ``step`` later.

    Each reading standing for a slow round trip, the balancing reads that precede
    an acquisition take time, which must never be counted inside the lease.
    """

    def __init__(self, start: datetime, step: float = 0.5) -> None:
        self.start, self.step, self.t = start, step, 0.0

    def sync(self) -> None:
        pass

    def monotonic(self) -> float:
        self.t += self.step
        return self.t

    def now(self) -> datetime:
        self.t += self.step
        return self.start + timedelta(seconds=self.t)

    def at(self, when: datetime) -> float:
        """The monotonic reading that matches database time ``when``."""
        return (when - self.start).total_seconds()


def test_an_acquired_or_renewed_lease_is_trusted_only_until_its_lease_until_minus_the_margin(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    clock = SteppingClock(store.now())
    watcher = Watcher(store, feed.name, RecordingProcessor(), FAST, owner="w-clock", clock=clock)

    async def balance_then_renew() -> tuple[float, float]:
        await watcher.leasekeeper.balance()
        [lease] = watcher.leases.values()
        acquired = lease.trusted_until
        await watcher.leasekeeper.renew()
        return acquired, lease.trusted_until

    try:
        acquired, renewed = asyncio.run(balance_then_renew())
        margin, step = FAST.margin, clock.step
        [row] = [p for p in feed.partitions() if p.id == "p"]
        assert row.owner == "w-clock" and row.lease_until is not None
        # lease_until now is the renewal's; the acquisition wrote one a few readings earlier.
        renewed_until = clock.at(row.lease_until)
        assert renewed_until - margin - 2 * step <= renewed <= renewed_until - margin
        p = store.tables.history
        with store.engine.connect() as conn:
            [(acquired_at,)] = conn.execute(
                select(p.c.at).where(p.c.feed == feed.name, p.c.event == "lease_acquired")
            ).all()
        acquired_until = clock.at(acquired_at) + FAST.lease_duration
        assert acquired_until - margin - 2 * step <= acquired <= acquired_until - margin, (
            f"trusted until {acquired}, lease written until {acquired_until} (margin {margin})"
        )
    finally:
        watcher._executor.shutdown()
        watcher._lease_executor.shutdown()
        store.release_leases(
            feed.name, "w-clock", [row.pk for row in feed.partitions()], now=store.now(), history=True
        )
