"""Dispatching: claiming items in batches, calling the processor, committing results.

``concurrency`` bounds processor calls in flight; ``batch_size`` bounds the
rows of one claim or commit statement. Each round gives every held partition
a fair share of the free slots, so one huge partition cannot starve the
others. Claims only take what can start at once: a claimed item counts an
attempt, and items must not wait claimed while the watcher could die.

Results are gathered for up to ``commit_interval`` (or ``batch_size`` rows)
and written in one statement; no item costs a round trip of its own.
"""

from __future__ import annotations

import asyncio
import math
import random
import uuid
from typing import TYPE_CHECKING

from feedwatch.engine import gating, retrying
from feedwatch.processors.base import Item, Result
from feedwatch.store.records import Claimed, ClaimRequest, ItemOutcome

if TYPE_CHECKING:
    from feedwatch.engine.leasing import Lease
    from feedwatch.engine.watcher import Watcher


class Dispatcher:
    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher
        self.calls_in_flight = 0
        self.pending: list[tuple[Lease, ItemOutcome]] = []
        self.wake = asyncio.Event()
        self.results_ready = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._cursor = 0
        self._batch_token: str | None = None
        self._batch_len = 0
        #: A suspect (an item in flight when a watcher died) runs alone.
        self.isolating = False

    # -- claiming ---------------------------------------------------------

    async def pump(self) -> None:
        w = self.w
        while not w.stopping:
            try:
                progressed = await self.round()
            except Exception as error:
                if not w.is_database_trouble(error):
                    raise
                w.log_database_trouble(error)
                await w.sleep(min(w.settings.poll_interval, 1.0))
                continue
            if progressed:
                await asyncio.sleep(0)
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self._idle_wait())
            except TimeoutError:
                pass

    def _idle_wait(self) -> float:
        mono = self.w.clock.monotonic()
        wait = self.w.settings.poll_interval
        for lease in self.w.leases.values():
            if lease.idle_until > mono:
                wait = min(wait, lease.idle_until - mono)
        return max(wait, 0.005)

    async def round(self) -> bool:
        """Claim and dispatch once across all leases (one statement); True if anything started."""
        w = self.w
        if w.feed_settings.paused or self.isolating:
            return False
        mono = w.clock.monotonic()
        leases = [
            lease
            for lease in w.leases.values()
            if lease.trusted(mono) and lease.handing_to is None and lease.idle_until <= mono
        ]
        free = w.settings.concurrency - self.calls_in_flight
        if not leases or free <= 0 or w.stopping:
            return False
        waiting = [lease for lease in leases if lease.suspects == "pending"]
        if waiting:
            if self.calls_in_flight or self.pending:
                return False  # a suspect waits: claim nothing new until in-flight work drains
            leases = waiting
        share = max(1, math.ceil(w.settings.concurrency / len(w.leases)))
        self._cursor = (self._cursor + 1) % len(leases)
        requests: list[ClaimRequest] = []
        by_pk: dict[int, Lease] = {}
        budget = min(free, w.settings.batch_size)
        for lease in leases[self._cursor :] + leases[: self._cursor]:
            room = min(share - lease.in_flight, budget)
            if room <= 0:
                continue
            requests.append(ClaimRequest(lease.pk, lease.epoch, lease.gate, room))
            by_pk[lease.pk] = lease
            budget -= room
            if budget <= 0:
                break
        if not requests:
            return False
        s = w.feed_settings
        alone = self.calls_in_flight == 0 and not self.pending
        # With nothing in flight every claim looks for suspects; otherwise only new leases do.
        looked = set(by_pk) if alone else {pk for pk, lease in by_pk.items() if lease.suspects == "unknown"}
        batch = await w.db(
            w.store.claim_batch,
            w.feed,
            w.owner,
            requests,
            w.clock.now(),
            s.max_unanswered,
            s.history,
            suspects=alone,
            probe=looked,
        )
        if batch.failed:
            w.metrics.item("fail", batch.failed)
        progressed = False
        for pk in batch.lost:
            w.drop(by_pk[pk], "lease_lost", f"{by_pk[pk].id!r} is no longer ours")
        for pk, gate in batch.moved.items():
            progressed = True  # claim again at once, at the gate the database holds
            self.follow_gate(by_pk[pk], gate)
        for pk in looked - batch.lost - batch.moved.keys():
            by_pk[pk].suspects = "pending" if pk in batch.suspects else "none"
        for pk, items in batch.claimed.items():
            lease = by_pk[pk]
            lease.empty_work = 0
            if items[0].suspect:
                self.isolating = True  # nothing else starts until the suspect answers
                lease.suspects = "unknown"  # another may wait behind it
            for item in items:
                self.start(lease, item)
            progressed = True
        if self.isolating or batch.suspects:
            return progressed or bool(batch.suspects)  # come back once in-flight work drained
        for request in requests:
            lease = by_pk[request.partition_pk]
            if request.partition_pk in batch.claimed or request.partition_pk in batch.moved or lease.dropped:
                continue
            if lease.in_flight:
                # Wait for the results in flight before deciding anything; look
                # again after a poll interval for items enqueued meanwhile.
                lease.idle_until = w.clock.monotonic() + w.settings.poll_interval
                continue
            if await gating.checkpoint(w, lease):
                progressed = True  # a gate advanced (or work is due): claim again now
        return progressed

    def follow_gate(self, lease: Lease, gate: int) -> None:
        """The partition's gate moved under us (by hand, or by a checkpoint): work the new one."""
        if gate == lease.gate:
            return
        self.w.event(lease, "gate_moved", f"{lease.id!r} is at gate {gate} now (was {lease.gate} here)")
        lease.gate = gate
        lease.empty_work = 0
        lease.suspects = "unknown"  # suspects are looked for gate by gate

    # -- calling the processor -------------------------------------------

    def start(self, lease: Lease, claimed: Claimed) -> None:
        lease.in_flight += 1
        self.calls_in_flight += 1
        self.w.metrics.in_flight.set(self.calls_in_flight)
        task = asyncio.create_task(self.call(lease, claimed), name=f"item:{lease.id}/{claimed.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def call(self, lease: Lease, claimed: Claimed) -> None:
        w = self.w
        item = Item(
            feed=w.feed,
            partition=lease.id,
            id=claimed.id,
            gate=claimed.gate,
            attempt=claimed.attempt,
            data=claimed.data,
            content_type=claimed.content_type,
        )
        started = w.clock.monotonic()
        answer: Result | BaseException
        try:
            answer = await w.processor.process(item)
        except asyncio.CancelledError:
            self.calls_in_flight -= 1
            lease.in_flight -= 1
            self.isolating = self.isolating and not claimed.suspect
            raise
        except Exception as error:
            answer = error
        finally:
            w.metrics.latency.observe(w.clock.monotonic() - started)
        if not isinstance(answer, Result | BaseException):
            answer = TypeError(f"the processor returned {type(answer).__name__}, not a Result")
        self.calls_in_flight -= 1
        if claimed.suspect:
            self.isolating = False
        w.metrics.in_flight.set(self.calls_in_flight)
        outcome = retrying.outcome(lease.pk, claimed, answer, w.feed_settings, w.clock.now(), self.rng)
        if outcome.kind != "complete":
            w.log.debug(
                "item %s: %s (%s)",
                claimed.id,
                outcome.kind,
                outcome.error,
                extra={"action": f"item_{outcome.kind}", "partition": lease.id, "item": claimed.id},
            )
        self.pending.append((lease, outcome))
        self.results_ready.set()
        self.wake.set()

    # -- committing -------------------------------------------------------

    async def committer(self) -> None:
        w = self.w
        while True:
            if not self.pending:
                if w.stopping and not self.tasks:
                    return
                self.results_ready.clear()
                try:
                    await asyncio.wait_for(self.results_ready.wait(), timeout=0.1)
                except TimeoutError:
                    continue
            if len(self.pending) < w.settings.batch_size and self.calls_in_flight:
                await asyncio.sleep(w.settings.commit_interval)
            # A retried batch is exactly the batch that failed (same rows, same token).
            batch = self.pending[: self._batch_len or w.settings.batch_size]
            self._batch_len = len(batch)
            retrying = self._batch_token is not None
            self._batch_token = self._batch_token or uuid.uuid4().hex
            try:
                won = await w.db(
                    w.store.commit_results,
                    w.feed,
                    w.owner,
                    [o for _, o in batch],
                    w.clock.now(),
                    w.feed_settings.history,
                    self._batch_token,
                    retrying,
                )
            except Exception as error:
                if not w.is_database_trouble(error):
                    raise
                w.log_database_trouble(error)
                # The same batch is retried with the same token, so a COMMIT
                # that landed before the error is recognised, not counted lost.
                await w.sleep(min(w.settings.poll_interval, 1.0))
                continue
            self._batch_token, self._batch_len = None, 0
            del self.pending[: len(batch)]
            for lease, outcome in batch:
                lease.in_flight -= 1
                if outcome.pk in won:
                    w.metrics.item(outcome.kind)
                    if outcome.kind == "fail":
                        w.log.info(
                            "item %s failed: %s",
                            outcome.pk,
                            outcome.error,
                            extra={"action": "item_failed", "partition": lease.id},
                        )
                else:
                    w.metrics.lost_races.inc()
                    w.log.debug(
                        "result of item %s discarded: it changed since its claim",
                        outcome.pk,
                        extra={"action": "lost_race", "partition": lease.id},
                    )
                if lease.in_flight == 0:
                    lease.idle_until = 0.0
            self.wake.set()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for calls in flight, then cancel the rest."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                self.w.log.warning(
                    "%d processor call(s) cancelled after the grace period",
                    len(pending),
                    extra={"action": "grace_exceeded"},
                )
