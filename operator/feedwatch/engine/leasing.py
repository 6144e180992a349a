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
claiming from the partition, waits for its in-flight items (bounded by the
grace period) and writes the thief in as owner. Balancing therefore never
duplicates a handler call; only crashes and expired leases can.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from feedwatch.engine import balancing

if TYPE_CHECKING:
    from feedwatch.engine.watcher import Watcher
    from feedwatch.store.records import LeaseRow

log = logging.getLogger("feedwatch.engine.leasing")


@dataclass
class Lease:
    """A partition this watcher holds, and what the dispatcher knows of it."""

    pk: int
    id: str
    gate: int
    epoch: int
    trusted_until: float
    in_flight: int = 0
    idle_until: float = 0.0
    handing_to: str | None = None
    handoff_deadline: float = math.inf
    received_at: float = 0.0
    empty_work: int = 0
    dropped: bool = False
    #: Whether a suspect waits at this lease's gate: not looked yet, none, or one pending.
    suspects: Literal["unknown", "none", "pending"] = "unknown"

    def trusted(self, mono: float) -> bool:
        return not self.dropped and mono < self.trusted_until


class LeaseKeeper:
    """The loop that heartbeats, renews, hands off, acquires and balances."""

    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher
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

    @property
    def leases(self) -> dict[int, Lease]:
        return self.w.leases

    async def run(self) -> None:
        w = self.w
        while not w.stopping:
            try:
                await self.tick()
            except Exception as error:
                if not w.is_database_trouble(error):
                    raise
                w.log_database_trouble(error)
                await w.sleep(min(w.settings.poll_interval, 1.0))
                continue
            self.wake.clear()
            delay = min(w.settings.poll_interval, max(self._next_renewal - w.clock.monotonic(), 0))
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=max(delay, 0.01))
            except TimeoutError:
                pass

    async def tick(self) -> None:
        w = self.w
        if w.clock.monotonic() >= self._next_renewal:
            await self.renew()
        await self.hand_off_due()
        mono = w.clock.monotonic()
        if not w.stopping and not w.feed_settings.paused and mono >= self._next_balance:
            self._next_balance = mono + w.settings.poll_interval / 2
            await self.balance()

    async def renew(self) -> None:
        """Heartbeat, re-read the feed, extend every lease; learn of steals and lost leases."""
        w = self.w
        started = w.clock.monotonic()
        await w.db_lease(w.clock.sync)
        now = w.clock.now()
        duration = w.settings.lease_duration
        await w.db_lease(
            w.store.heartbeat, w.feed, w.owner, self.host, now, now + timedelta(seconds=duration)
        )
        w.feed_settings = await w.db_lease(w.store.load_feed, w.feed)
        rows: list[LeaseRow] = await w.db_lease(
            w.store.renew_leases, w.feed, w.owner, now + timedelta(seconds=duration)
        )
        self._next_renewal = started + w.settings.renewal_period
        trusted = started + duration - w.settings.margin
        held = {r.pk: r for r in rows}
        for pk, lease in list(self.leases.items()):
            if pk not in held:
                w.drop(lease, "lease_lost", "lease lost: another watcher took it after it expired")
        for row in rows:
            known = self.leases.get(row.pk)
            if known is None:
                lease = self._adopt(row, trusted)
                w.metrics.steals.inc()
                w.event(lease, "lease_received", f"received {row.id!r} by hand-off")
            else:
                lease = known
            self._requested.pop(row.pk, None)
            lease.trusted_until = trusted
            if row.steal_by and lease.handing_to is None and self._may_give(lease):
                lease.handing_to = row.steal_by
                lease.handoff_deadline = w.clock.monotonic() + w.settings.grace_period
                w.event(lease, "steal_requested", f"{row.steal_by} asked for {row.id!r}")
        w.metrics.leases.set(len(self.leases))
        w.dispatcher.wake.set()

    def _may_give(self, lease: Lease) -> bool:
        """Honour a steal only above target, and not for a partition just received.

        A partition handed over must be worked (dispatched, or checkpointed)
        by its receiver before it moves again: otherwise two watchers can pass
        the last partitions back and forth forever without either working them.
        """
        settled = self.w.clock.monotonic() - lease.received_at >= self.w.settings.renewal_period
        return settled and len(self.leases) > self.goal

    def _adopt(self, row: LeaseRow, trusted: float) -> Lease:
        lease = Lease(
            row.pk, row.id, row.gate, row.lease_epoch, trusted, received_at=self.w.clock.monotonic()
        )
        self.leases[row.pk] = lease
        return lease

    async def hand_off_due(self) -> None:
        w = self.w
        mono = w.clock.monotonic()
        for lease in list(self.leases.values()):
            if lease.handing_to is None:
                continue
            if lease.in_flight and mono < lease.handoff_deadline:
                continue
            now = w.clock.now()
            until = now + timedelta(seconds=w.settings.lease_duration)
            handed = await w.db_lease(
                w.store.hand_off,
                w.feed,
                w.owner,
                lease.pk,
                lease.handing_to,
                now,
                until,
                w.feed_settings.history,
            )
            w.drop(
                lease,
                "lease_handed_off" if handed else "lease_lost",
                f"handed {lease.id!r} to {lease.handing_to}" if handed else "lost during hand-off",
            )

    async def balance(self) -> None:
        """Take free partitions up to the target; below it with none free, ask for one."""
        w = self.w
        now = w.clock.now()
        cap = w.settings.max_partitions
        # Counted every pass: when a watcher exits gracefully its heartbeat row goes,
        # and the others' targets must rise at their next pass, not their next renewal.
        self.live_watchers = max(await w.db_lease(w.store.count_live_watchers, w.feed, now), 1)
        active = await w.db_lease(w.store.count_active, w.feed, now, cap * self.live_watchers)
        w.metrics.active_partitions.set(active)
        goal = balancing.target(active, self.live_watchers, cap)
        self.goal = goal
        held = len(self.leases)
        mono = w.clock.monotonic()
        self._requested = {pk: t for pk, t in self._requested.items() if t > mono}
        if held >= goal:
            return
        # The window starts where the lease written starts: read both clocks now,
        # after the balancing reads above and before the acquiring round trip.
        started = w.clock.monotonic()
        written = w.clock.now()
        rows: list[LeaseRow] = await w.db_lease(
            w.store.acquire_leases,
            w.feed,
            w.owner,
            written,
            written + timedelta(seconds=w.settings.lease_duration),
            goal - held,
            w.feed_settings.history,
        )
        trusted = started + w.settings.lease_duration - w.settings.margin
        for row in rows:
            lease = self._adopt(row, trusted)
            w.event(lease, "lease_acquired", f"acquired {row.id!r} at gate {row.gate}")
        if rows:
            w.metrics.leases.set(len(self.leases))
            w.dispatcher.wake.set()
            return
        if mono < self._next_steal or held + len(self._requested) >= goal:
            return  # requests already pending count as held: never ask for more than the gap
        self._next_steal = mono + w.settings.poll_interval
        loads = await w.db_lease(w.store.owner_loads, w.feed, now)
        victim = balancing.victim(loads, w.owner, goal)
        if victim is not None:
            pk = await w.db_lease(w.store.request_steal, w.feed, w.owner, victim)
            if pk is not None:
                # Expect it within a lease; renew early so a hand-off is adopted at once.
                self._requested[pk] = mono + w.settings.lease_duration
                self._next_renewal = min(self._next_renewal, mono + w.settings.poll_interval)
                w.log.info(
                    "asked %s for a partition (holding %d, target %d)",
                    victim,
                    held,
                    goal,
                    extra={"action": "steal_requested"},
                )

    async def release_all(self) -> None:
        w = self.w
        pks = list(self.leases)
        if pks:
            await w.db_lease(
                w.store.release_leases, w.feed, w.owner, pks, w.clock.now(), w.feed_settings.history
            )
            for lease in list(self.leases.values()):
                w.drop(lease, "lease_released", f"released {lease.id!r}")
        await w.db_lease(w.store.remove_heartbeat, w.feed, w.owner)
