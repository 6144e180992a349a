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

#: How the error of an item whose result the database refused begins.
REFUSED = "the database refused this item's result"


class Dispatcher:
    def __init__(self, watcher: Watcher) -> None:
        self.w = watcher
        self.calls_in_flight = 0
        self.pending: list[tuple[Lease, Claimed, ItemOutcome]] = []
        self.wake = asyncio.Event()
        self.results_ready = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()
        self.rng = random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._cursor = 0
        self._batch_token: str | None = None
        self._batch_len = 0
        #: A suspect (an item in flight when a watcher died) runs alone.
        self.isolating = False
        #: (pk, version) of results the database refused once; their replacement is in ``pending``.
        self._refused_once: set[tuple[int, int]] = set()

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
        """Ask the processor about one item: whatever happens ends as that item's result.

        Any exception on the way (raised by the processor, by turning its answer
        into an outcome, by logging or metrics) becomes the item's retry or
        failure; none escapes the task, so the item never stays in flight.
        """
        w = self.w
        key = (lease.pk, claimed.pk)
        w.liveness.item_started(key, f"{lease.id}/{claimed.id}")
        started = w.clock.monotonic()
        answer: Result | BaseException
        try:
            answer = await self._ask(lease, claimed)
        except asyncio.CancelledError as cancelled:
            task = asyncio.current_task()
            if task is None or not task.cancelling():
                answer = cancelled  # the processor's own, not ours: the item's error
            else:
                self.calls_in_flight -= 1
                lease.in_flight -= 1
                self.isolating = self.isolating and not claimed.suspect
                w.liveness.item_finished(key)
                raise
        except BaseException as error:  # SystemExit from a processor too: it is the item's
            answer = error
        self.calls_in_flight -= 1
        if claimed.suspect:
            self.isolating = False
        try:
            w.metrics.latency.observe(w.clock.monotonic() - started)
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
        except Exception as error:
            message = f"feedwatch could not handle the answer: {retrying.describe(error)}"
            outcome = retrying.broken(lease.pk, claimed, message, w.feed_settings, w.clock.now())
        w.liveness.item_finished(key)
        self.pending.append((lease, claimed, outcome))
        self.results_ready.set()
        self.wake.set()

    async def _ask(self, lease: Lease, claimed: Claimed) -> Result | BaseException:
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
        answer = await w.processor.process(item)
        if not isinstance(answer, Result):
            return TypeError(f"the processor returned {type(answer).__name__}, not a Result")
        return answer

    # -- committing -------------------------------------------------------

    async def committer(self) -> None:
        """Write results in batches until stopped; a row the database refuses fails only its item."""
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
            again = self._batch_token is not None
            self._batch_token = self._batch_token or uuid.uuid4().hex
            w.liveness.commit_started()
            try:
                report = await w.db(
                    w.store.commit_results_isolating,
                    w.feed,
                    w.owner,
                    [o for _, _, o in batch],
                    w.clock.now(),
                    w.feed_settings.history,
                    self._batch_token,
                    again,
                )
            except Exception as error:
                if not w.is_database_trouble(error):
                    raise
                w.log_database_trouble(error)
                w.liveness.commit_failed(str(error).splitlines()[0] if str(error) else type(error).__name__)
                # The same batch is retried with the same token, so a COMMIT
                # that landed before the error is recognised, not counted lost.
                await w.sleep(min(w.settings.poll_interval, 1.0))
                continue
            w.liveness.commit_succeeded()
            self._batch_token, self._batch_len = None, 0
            del self.pending[: len(batch)]
            retry: list[tuple[Lease, Claimed, ItemOutcome]] = []
            for lease, claimed, outcome in batch:
                if outcome.pk in report.rejected:
                    replacement = self._refused(lease, claimed, outcome, report.rejected[outcome.pk])
                    if replacement is not None:
                        retry.append((lease, claimed, replacement))
                        continue
                lease.in_flight -= 1
                self._refused_once.discard((claimed.pk, claimed.version))
                if outcome.pk in report.won:
                    w.metrics.item(outcome.kind)
                    if outcome.kind == "fail":
                        w.log.info(
                            "item %s failed: %s",
                            outcome.pk,
                            outcome.error,
                            extra={"action": "item_failed", "partition": lease.id},
                        )
                elif outcome.pk not in report.rejected:
                    w.metrics.lost_races.inc()
                    w.log.debug(
                        "result of item %s discarded: it changed since its claim",
                        outcome.pk,
                        extra={"action": "lost_race", "partition": lease.id},
                    )
                if lease.in_flight == 0:
                    lease.idle_until = 0.0
            self.pending[:0] = retry  # first in the next batch
            self.wake.set()

    def _refused(
        self, lease: Lease, claimed: Claimed, outcome: ItemOutcome, reason: str
    ) -> ItemOutcome | None:
        """What to write instead of a result the database refused (``None``: give up on it).

        The refusal fails the item, naming the database's reason, with its
        gate and data left as they were so the database stores it. It is not
        retried: the same answer would be refused again (a re-drive after the
        handler is fixed runs it again). Should even that be refused, the item
        is left claimed for the next owner and the refusal logged as an error.
        """
        w = self.w
        if (claimed.pk, claimed.version) in self._refused_once:
            self._refused_once.discard((claimed.pk, claimed.version))
            w.log.error(
                "the database refused even the failure of item %s: %s",
                claimed.id,
                reason,
                extra={"action": "result_refused", "partition": lease.id},
            )
            return None
        w.log.warning(
            "the database refused the result of item %s (%s): %s",
            claimed.id,
            outcome.kind,
            reason,
            extra={"action": "result_refused", "partition": lease.id},
        )
        self._refused_once.add((claimed.pk, claimed.version))
        message = f"{REFUSED} ({outcome.kind}, gate {outcome.gate}): {reason}"
        return retrying.broken(lease.pk, claimed, message, w.feed_settings, w.clock.now(), permanent=True)

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
