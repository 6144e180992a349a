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
import logging
import math
import random
import uuid
from collections.abc import Callable

from feedwatch.engine import retrying
from feedwatch.engine.clock import Clock
from feedwatch.engine.gating import Checkpointer
from feedwatch.engine.leases import Lease, LeaseTable
from feedwatch.engine.threads import DatabaseTrouble, Offload
from feedwatch.observability.actions import Action
from feedwatch.observability.health import Liveness
from feedwatch.observability.logging import FeedLogger
from feedwatch.observability.metrics import Metrics
from feedwatch.processors.base import Item, Processor, Result
from feedwatch.settings import FeedSettings, WatcherSettings
from feedwatch.store import Store
from feedwatch.store.records import Claimed, ClaimRequest, ItemOutcome

#: How the error of an item whose result the database refused begins.
REFUSED = "the database refused this item's result"


class Dispatcher:
    """Claims, calls the processor, commits; checkpoints a partition with nothing left to claim."""

    def __init__(
        self,
        *,
        store: Store,
        feed: str,
        owner: str,
        processor: Processor,
        settings: WatcherSettings,
        feed_settings: Callable[[], FeedSettings],
        clock: Clock,
        leases: LeaseTable,
        checkpointer: Checkpointer,
        run: Offload,
        trouble: DatabaseTrouble,
        log: FeedLogger,
        metrics: Metrics,
        liveness: Liveness,
        stopping: Callable[[], bool],
    ) -> None:
        self.store = store
        self.feed = feed
        self.owner = owner
        self.processor = processor
        self.settings = settings
        self._feed_settings = feed_settings
        self.clock = clock
        self.leases = leases
        self.checkpointer = checkpointer
        self._run = run
        self._trouble = trouble
        self.log = log
        self.metrics = metrics
        self.liveness = liveness
        self._stopping = stopping
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
        while not self._stopping():
            try:
                progressed = await self.round()
            except Exception as error:
                await self._trouble.outlast(error)
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
        mono = self.clock.monotonic()
        wait = self.settings.poll_interval
        for lease in self.leases.values():
            if lease.idle_until > mono:
                wait = min(wait, lease.idle_until - mono)
        return max(wait, 0.005)

    async def round(self) -> bool:
        """Claim and dispatch once across all leases (one statement); True if anything started."""
        if self._feed_settings().paused or self.isolating:
            return False
        mono = self.clock.monotonic()
        leases = [
            lease
            for lease in self.leases.values()
            if lease.trusted(mono) and lease.handing_to is None and lease.idle_until <= mono
        ]
        free = self.settings.concurrency - self.calls_in_flight
        if not leases or free <= 0 or self._stopping():
            return False
        waiting = [lease for lease in leases if lease.suspects == "pending"]
        if waiting:
            if self.calls_in_flight or self.pending:
                return False  # a suspect waits: claim nothing new until in-flight work drains
            leases = waiting
        share = max(1, math.ceil(self.settings.concurrency / len(self.leases)))
        self._cursor = (self._cursor + 1) % len(leases)
        requests: list[ClaimRequest] = []
        by_pk: dict[int, Lease] = {}
        budget = min(free, self.settings.batch_size)
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
        s = self._feed_settings()
        alone = self.calls_in_flight == 0 and not self.pending
        # With nothing in flight every claim looks for suspects; otherwise only new leases do.
        looked = set(by_pk) if alone else {pk for pk, lease in by_pk.items() if lease.suspects == "unknown"}
        for lease in by_pk.values():
            lease.claiming = True  # a hand-off waits for this claim: what it wins starts at once
        try:
            batch = await self._run(
                self.store.claim_batch,
                self.feed,
                self.owner,
                requests,
                now=self.clock.now(),
                max_unanswered=s.max_unanswered,
                history=s.history,
                suspects=alone,
                probe=looked,
            )
        finally:
            for lease in by_pk.values():
                lease.claiming = False
        if batch.failed:
            self.metrics.item("fail", batch.failed)
        progressed = False
        for pk in batch.lost:
            self.leases.drop(by_pk[pk], Action.LEASE_LOST, f"{by_pk[pk].id!r} is no longer ours")
        for pk, gate in batch.moved.items():
            progressed = True  # claim again at once, at the gate the database holds
            self.leases.follow_gate(by_pk[pk], gate)
        for pk in looked - batch.lost - batch.moved.keys():
            by_pk[pk].suspects = "pending" if pk in batch.suspects else "none"
        for pk, lease in by_pk.items():
            lease.drained = pk in batch.exhausted
        for pk, items in batch.claimed.items():
            lease = by_pk[pk]
            lease.empty_work = 0
            if items[0].suspect:
                self.isolating = True  # nothing else starts until the suspect answers
                lease.suspects = "unknown"  # another may wait behind it
            for item in items:
                self.start(lease, item)
            progressed = True
        self.metrics.in_flight.set(self.calls_in_flight)  # once a round and a commit, not per item
        if self.isolating or batch.suspects:
            return progressed or bool(batch.suspects)  # come back once in-flight work drained
        for request in requests:
            lease = by_pk[request.partition_pk]
            if request.partition_pk in batch.claimed or request.partition_pk in batch.moved or lease.dropped:
                continue
            if lease.in_flight:
                # Wait for the results in flight before deciding anything; look
                # again after a poll interval for items enqueued meanwhile.
                lease.idle_until = self.clock.monotonic() + self.settings.poll_interval
                continue
            if await self.checkpointer.checkpoint(lease):
                progressed = True  # a gate advanced (or work is due): claim again now
        return progressed

    # -- calling the processor -------------------------------------------

    def start(self, lease: Lease, claimed: Claimed) -> None:
        lease.in_flight += 1
        self.calls_in_flight += 1
        task = asyncio.create_task(self._tracked(lease, claimed), name=f"item:{lease.id}/{claimed.id}")
        self.tasks.add(task)

    async def _tracked(self, lease: Lease, claimed: Claimed) -> None:
        """:meth:`call`, leaving ``tasks`` as it ends (a done callback would cost a loop turn per item)."""
        try:
            await self.call(lease, claimed)
        finally:
            self.tasks.discard(asyncio.current_task())

    async def call(self, lease: Lease, claimed: Claimed) -> None:
        """Ask the processor about one item: whatever happens ends as that item's result.

        Any exception on the way (raised by the processor, by turning its answer
        into an outcome, by logging or metrics) becomes the item's retry or
        failure; none escapes the task, so the item never stays in flight.
        """
        key = (lease.pk, claimed.pk)
        self.liveness.item_started(key, f"{lease.id}/{claimed.id}")
        started = self.clock.monotonic()
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
                self.liveness.item_finished(key)
                raise
        except BaseException as error:  # SystemExit from a processor too: it is the item's
            answer = error
        self.calls_in_flight -= 1
        if claimed.suspect:
            self.isolating = False
        try:
            self.metrics.latency.observe(self.clock.monotonic() - started)
            outcome = retrying.outcome(
                lease.pk, claimed, answer, settings=self._feed_settings(), now=self.clock.now(), rng=self.rng
            )
            if outcome.kind != "complete" and self.log.isEnabledFor(logging.DEBUG):
                self.log.debug(
                    "item %s: %s (%s)",
                    claimed.id,
                    outcome.kind,
                    outcome.error,
                    extra={
                        "action": Action(f"item_{outcome.kind}"),
                        "partition": lease.id,
                        "item": claimed.id,
                    },
                )
        except Exception as error:
            message = f"feedwatch could not handle the answer: {retrying.describe(error)}"
            outcome = retrying.broken(lease.pk, claimed, message, self._feed_settings(), self.clock.now())
        self.liveness.item_finished(key)
        self.pending.append((lease, claimed, outcome))
        self.results_ready.set()
        self.wake.set()

    async def _ask(self, lease: Lease, claimed: Claimed) -> Result | BaseException:
        item = Item(
            feed=self.feed,
            partition=lease.id,
            id=claimed.id,
            gate=claimed.gate,
            attempt=claimed.attempt,
            data=claimed.data,
            content_type=claimed.content_type,
        )
        answer = await self.processor.process(item)
        if not isinstance(answer, Result):
            return TypeError(f"the processor returned {type(answer).__name__}, not a Result")
        return answer

    # -- committing -------------------------------------------------------

    async def committer(self) -> None:
        """Write results in batches until stopped; a row the database refuses fails only its item."""
        while True:
            if not self.pending:
                if self._stopping() and not self.tasks:
                    return
                self.results_ready.clear()
                try:
                    await asyncio.wait_for(self.results_ready.wait(), timeout=0.1)
                except TimeoutError:
                    continue
            if len(self.pending) < self.settings.batch_size and self.calls_in_flight:
                await asyncio.sleep(self.settings.commit_interval)
            # A retried batch is exactly the batch that failed (same rows, same token).
            batch = self.pending[: self._batch_len or self.settings.batch_size]
            self._batch_len = len(batch)
            again = self._batch_token is not None
            self._batch_token = self._batch_token or uuid.uuid4().hex
            self.liveness.commit_started()
            try:
                report = await self._run(
                    self.store.commit_results,
                    self.feed,
                    self.owner,
                    [o for _, _, o in batch],
                    now=self.clock.now(),
                    history=self._feed_settings().history,
                    token=self._batch_token,
                    retrying=again,
                    checkpoint=self.checkpointer.policy(),
                    emptying=self._fan_in_candidates(batch),
                )
            except Exception as error:
                self.liveness.commit_failed(
                    str(error).splitlines()[0] if str(error) else type(error).__name__
                )
                # The same batch is retried with the same token, so a COMMIT
                # that landed before the error is recognised, not counted lost.
                await self._trouble.outlast(error)
                continue
            self.liveness.commit_succeeded()
            self._batch_token, self._batch_len = None, 0
            del self.pending[: len(batch)]
            retry: list[tuple[Lease, Claimed, ItemOutcome]] = []
            committed: dict[str, int] = {}  # counted per kind once a batch, not per item
            for lease, claimed, outcome in batch:
                if outcome.pk in report.rejected:
                    replacement = self._refused(lease, claimed, outcome, report.rejected[outcome.pk])
                    if replacement is not None:
                        retry.append((lease, claimed, replacement))
                        continue
                lease.in_flight -= 1
                self._refused_once.discard((claimed.pk, claimed.version))
                if outcome.pk in report.won:
                    committed[outcome.kind] = committed.get(outcome.kind, 0) + 1
                    if outcome.kind == "fail":
                        self.log.info(
                            "item %s failed: %s",
                            outcome.pk,
                            outcome.error,
                            extra={"action": Action.ITEM_FAILED, "partition": lease.id},
                        )
                elif outcome.pk not in report.rejected:
                    self.metrics.lost_races.inc()
                    self.log.debug(
                        "result of item %s discarded: it changed since its claim",
                        outcome.pk,
                        extra={"action": Action.LOST_RACE, "partition": lease.id},
                    )
                if lease.in_flight == 0:
                    lease.idle_until = 0.0
            self.pending[:0] = retry  # first in the next batch
            for kind, count in committed.items():
                self.metrics.item(kind, count)
            self.metrics.in_flight.set(self.calls_in_flight)
            for pk, decision in report.decisions.items():
                emptied = self.leases.get(pk)
                if emptied is not None and not emptied.dropped:
                    await self.checkpointer.follow(emptied, decision)
            self.wake.set()

    @staticmethod
    def _fan_in_candidates(batch: list[tuple[Lease, Claimed, ItemOutcome]]) -> set[int]:
        """Partitions whose gate this batch may empty: drained, and nothing else of theirs in flight.

        The store checks each (one query per commit); asking only for these
        keeps that query off the commits that cannot be a fan-in point.
        """
        answered: dict[int, int] = {}
        for lease, _, _ in batch:
            answered[lease.pk] = answered.get(lease.pk, 0) + 1
        return {lease.pk for lease, _, _ in batch if lease.drained and lease.in_flight == answered[lease.pk]}

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
        if (claimed.pk, claimed.version) in self._refused_once:
            self._refused_once.discard((claimed.pk, claimed.version))
            self.log.error(
                "the database refused even the failure of item %s: %s",
                claimed.id,
                reason,
                extra={"action": Action.RESULT_REFUSED, "partition": lease.id},
            )
            return None
        self.log.warning(
            "the database refused the result of item %s (%s): %s",
            claimed.id,
            outcome.kind,
            reason,
            extra={"action": Action.RESULT_REFUSED, "partition": lease.id},
        )
        self._refused_once.add((claimed.pk, claimed.version))
        message = f"{REFUSED} ({outcome.kind}, gate {outcome.gate}): {reason}"
        return retrying.broken(
            lease.pk, claimed, message, self._feed_settings(), self.clock.now(), permanent=True
        )

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for calls in flight, then cancel the rest."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
                self.log.warning(
                    "%d processor call(s) cancelled after the grace period",
                    len(pending),
                    extra={"action": Action.GRACE_EXCEEDED},
                )
