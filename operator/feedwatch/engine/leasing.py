"""Leases: how a watcher comes to own partitions, keeps them, and gives them up.

Design note
-----------
A watcher owns a partition while ``owner = its id`` and ``lease_until`` is in
the future, by the database's clock. States of a partition, seen from one
watcher::

    free/expired --acquire--> held --renew--> held
    held --checkpoint closes/idles/waits--> free
    held --steal_by set by a thief--> handing off --in-flight done or grace--> thief's
    held --renewal misses it--> lost (someone took it after it expired)

Trust window. A renewal that started at monotonic time ``t`` extends the lease
to ``db_now + lease_duration``; the watcher trusts its lease only until
``t + lease_duration - margin``, measured from when the renewal *started*, so
a slow round trip can only shorten the window. An acquisition is measured the
same way: ``t`` and ``db_now`` are read together just before the acquiring
round trip (never before the balancing reads that precede it, never after),
so the window always ends ``margin`` before the ``lease_until`` written. Past
it the dispatcher stops claiming from the partition; results already in
flight still commit, fenced by each item's version.

Fencing. Lease writes are fenced by the owner (renewal ``WHERE owner = me``;
takeover ``WHERE owner = them AND lease_until = what I read``), never by the
partition's version, which producers bump: enqueueing never costs a lease.
Item writes carry the version their claim produced, so a late result of a
watcher that lost its lease is rejected once the new owner re-claimed the item.

Every acquisition bumps ``lease_epoch``; an item claimed under an older epoch
is claimable again, which is how a new owner picks up the work of a dead one
without waiting for anything but the lease. Such an item is a *suspect* (it
may be what killed the last owner) and runs alone: a new lease is looked at
for suspects at its first claim (``Lease.suspects``); if one waits, the
dispatcher claims nothing new, lets its in-flight calls finish, then runs the
suspect by itself. The suspect waits at most for the longest call in flight,
however busy the watcher is, and its lease is kept meanwhile (no release and
re-take).

The gate in :class:`Lease` is a cache of the partition's: every claim and
checkpoint reads the partition row, and a gate moved by hand (``feedwatch
gate``) replaces it there, so the owner never dispatches a gate from memory
after the move committed (only calls already in flight finish at the old one).

Steals are hand-offs: the victim sees ``steal_by`` at its next renewal, stops
claiming from the partition, waits for its in-flight items and for a claim
already on its way (bounded by the grace period) and writes the thief in as
owner. Balancing therefore never duplicates a handler call; only crashes and
expired leases can.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol

from feedwatch.engine import balancing
from feedwatch.engine.clock import Clock
from feedwatch.engine.leases import Lease, LeaseTable
from feedwatch.engine.threads import DatabaseTrouble, Offload
from feedwatch.observability.actions import Action
from feedwatch.observability.logging import FeedLogger
from feedwatch.observability.metrics import Metrics
from feedwatch.settings import FeedSettings, WatcherSettings
from feedwatch.store.records import LeaseRow

__all__ = ["Lease", "LeaseKeeper", "LeaseStore"]


class LeaseStore(Protocol):
    """The store's lease queries, all the lease keeper asks of a store."""

    def heartbeat(self, feed: str, owner: str, host: str, *, now: datetime, expires: datetime) -> None: ...
    def remove_heartbeat(self, feed: str, owner: str) -> None: ...
    def load_feed(self, name: str) -> FeedSettings: ...
    def renew_leases(self, feed: str, owner: str, *, until: datetime) -> list[LeaseRow]: ...
    def acquire_leases(
        self, feed: str, owner: str, *, now: datetime, until: datetime, limit: int, history: bool
    ) -> list[LeaseRow]: ...
    def hand_off(
        self, feed: str, owner: str, pk: int, *, to: str, now: datetime, until: datetime, history: bool
    ) -> bool: ...
    def release_leases(
        self, feed: str, owner: str, pks: list[int], *, now: datetime, history: bool
    ) -> int: ...
    def count_balance(self, feed: str, now: datetime, *, cap: int) -> tuple[int, int]: ...
    def owner_loads(self, feed: str, now: datetime) -> dict[str, int]: ...
    def request_steal(self, feed: str, thief: str, victim: str) -> int | None: ...


class LeaseKeeper:
    """The loop that heartbeats, renews, hands off, acquires and balances.

    It holds the feed's settings as last read (``feed_settings``, re-read at
    every renewal); the other parts read them through a getter, never a copy.
    ``on_change`` is called when leases were gained or renewed (the dispatcher
    has work to look at).
    """

    def __init__(
        self,
        *,
        store: LeaseStore,
        feed: str,
        owner: str,
        settings: WatcherSettings,
        feed_settings: FeedSettings,
        clock: Clock,
        leases: LeaseTable,
        run: Offload,
        trouble: DatabaseTrouble,
        log: FeedLogger,
        metrics: Metrics,
        stopping: Callable[[], bool],
        on_change: Callable[[], None],
    ) -> None:
        self.store = store
        self.feed = feed
        self.owner = owner
        self.settings = settings
        self.feed_settings = feed_settings
        self.clock = clock
        self.leases = leases
        self._run = run
        self._trouble = trouble
        self._log = log
        self._metrics = metrics
        self._stopping = stopping
        self._on_change = on_change
        self.host = socket.gethostname()
        self.live_watchers = 1
        self._next_renewal = 0.0
        self._next_steal = 0.0
        self._next_balance = 0.0
        #: Partitions this watcher asked for, and until when it expects them.
        self._requested: dict[int, float] = {}
        #: The balanced target computed at the last pass.
        self.goal = 0
        self.wake = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping():
            try:
                await self.tick()
            except Exception as error:
                await self._trouble.outlast(error)
                continue
            self.wake.clear()
            delay = min(self.settings.poll_interval, max(self._next_renewal - self.clock.monotonic(), 0))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(delay, 0.01))
            except TimeoutError:
                pass

    async def tick(self) -> None:
        if self.clock.monotonic() >= self._next_renewal:
            await self.renew()
        await self.hand_off_due()
        mono = self.clock.monotonic()
        if not self._stopping() and not self.feed_settings.paused and mono >= self._next_balance:
            self._next_balance = mono + self.settings.poll_interval / 2
            await self.balance()

    async def renew(self) -> None:
        """Heartbeat, re-read the feed, extend every lease; learn of steals and lost leases."""
        store, clock, settings = self.store, self.clock, self.settings
        started = clock.monotonic()
        await self._run(clock.sync)
        now = clock.now()
        duration = settings.lease_duration
        await self._run(
            store.heartbeat,
            self.feed,
            self.owner,
            self.host,
            now=now,
            expires=now + timedelta(seconds=duration),
        )
        self.feed_settings = await self._run(store.load_feed, self.feed)
        rows: list[LeaseRow] = await self._run(
            store.renew_leases, self.feed, self.owner, until=now + timedelta(seconds=duration)
        )
        self._next_renewal = started + settings.renewal_period
        trusted = started + duration - settings.margin
        held = {r.pk: r for r in rows}
        for pk, lease in list(self.leases.items()):
            if pk not in held:
                self.leases.drop(
                    lease, Action.LEASE_LOST, "lease lost: another watcher took it after it expired"
                )
        for row in rows:
            known = self.leases.get(row.pk)
            if known is None:
                lease = self._adopt(row, trusted)
                self._metrics.steals.inc()
                self.leases.event(lease, Action.LEASE_RECEIVED, f"received {row.id!r} by hand-off")
            else:
                lease = known
            self._requested.pop(row.pk, None)
            lease.trusted_until = trusted
            if row.steal_by and lease.handing_to is None and self._may_give(lease):
                lease.handing_to = row.steal_by
                lease.handoff_deadline = clock.monotonic() + settings.grace_period
                self.leases.event(lease, Action.STEAL_REQUESTED, f"{row.steal_by} asked for {row.id!r}")
        self.leases.count()
        self._on_change()

    def _may_give(self, lease: Lease) -> bool:
        """Honour a steal only above target, and not for a partition just received.

        A partition handed over must be worked (dispatched, or checkpointed)
        by its receiver before it moves again: otherwise two watchers can pass
        the last partitions back and forth forever without either working them.
        """
        return balancing.may_give(
            held=len(self.leases),
            goal=self.goal,
            held_for=self.clock.monotonic() - lease.received_at,
            settle=self.settings.renewal_period,
        )

    def _adopt(self, row: LeaseRow, trusted: float) -> Lease:
        lease = Lease(row.pk, row.id, row.gate, row.lease_epoch, trusted, received_at=self.clock.monotonic())
        self.leases.add(lease)
        return lease

    async def hand_off_due(self) -> None:
        mono = self.clock.monotonic()
        for lease in list(self.leases.values()):
            if lease.handing_to is None:
                continue
            if (lease.in_flight or lease.claiming) and mono < lease.handoff_deadline:
                continue
            now = self.clock.now()
            until = now + timedelta(seconds=self.settings.lease_duration)
            handed = await self._run(
                self.store.hand_off,
                self.feed,
                self.owner,
                lease.pk,
                to=lease.handing_to,
                now=now,
                until=until,
                history=self.feed_settings.history,
            )
            self.leases.drop(
                lease,
                Action.LEASE_HANDED_OFF if handed else Action.LEASE_LOST,
                f"handed {lease.id!r} to {lease.handing_to}" if handed else "lost during hand-off",
            )

    async def balance(self) -> None:
        """Take free partitions up to the target; below it with none free, ask for one."""
        store, clock, settings = self.store, self.clock, self.settings
        now = clock.now()
        cap = settings.max_partitions
        # Counted every pass: when a watcher exits gracefully its heartbeat row goes,
        # and the others' targets must rise at their next pass, not their next renewal.
        self.live_watchers, active = await self._run(store.count_balance, self.feed, now, cap=cap)
        self._metrics.active_partitions.set(active)
        goal = balancing.target(active, self.live_watchers, cap)
        self.goal = goal
        held = len(self.leases)
        mono = clock.monotonic()
        self._requested = {pk: t for pk, t in self._requested.items() if t > mono}
        if held >= goal:
            return
        # The window starts where the lease written starts: read both clocks now,
        # after the balancing reads above and before the acquiring round trip.
        started = clock.monotonic()
        written = clock.now()
        rows: list[LeaseRow] = await self._run(
            store.acquire_leases,
            self.feed,
            self.owner,
            now=written,
            until=written + timedelta(seconds=settings.lease_duration),
            limit=goal - held,
            history=self.feed_settings.history,
        )
        trusted = started + settings.lease_duration - settings.margin
        for row in rows:
            lease = self._adopt(row, trusted)
            self.leases.event(lease, Action.LEASE_ACQUIRED, f"acquired {row.id!r} at gate {row.gate}")
        if rows:
            self.leases.count()
            self._on_change()
            return
        if mono < self._next_steal or held + len(self._requested) >= goal:
            return  # requests already pending count as held: never ask for more than the gap
        self._next_steal = mono + settings.poll_interval
        loads = await self._run(store.owner_loads, self.feed, now)
        victim = balancing.victim(loads, self.owner, goal)
        if victim is not None:
            pk = await self._run(store.request_steal, self.feed, self.owner, victim)
            if pk is not None:
                # Expect it within a lease; renew early so a hand-off is adopted at once.
                self._requested[pk] = mono + settings.lease_duration
                self._next_renewal = min(self._next_renewal, mono + settings.poll_interval)
                self._log.info(
                    "asked %s for a partition (holding %d, target %d)",
                    victim,
                    held,
                    goal,
                    extra={"action": Action.STEAL_REQUESTED},
                )

    async def release_all(self) -> None:
        pks = list(self.leases)
        if pks:
            await self._run(
                self.store.release_leases,
                self.feed,
                self.owner,
                pks,
                now=self.clock.now(),
                history=self.feed_settings.history,
            )
            for lease in list(self.leases.values()):
                self.leases.drop(lease, Action.LEASE_RELEASED, f"released {lease.id!r}")
        await self._run(self.store.remove_heartbeat, self.feed, self.owner)
