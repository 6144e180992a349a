"""Checkpoints: what a partition does once nothing at its gate is left to claim.

The decision is :func:`next_step`, a pure function of a :class:`GateSnapshot`:
keep working (items due now), stay held (the next item is due within
``hold_for``), release to wait for retries, fail the partition on a failed
item under the ``block`` policy, advance to the lowest gate that still has
available items (or go idle under a manual checkpoint), close it when
everything is complete (auto-close), or let it go idle.

Who calls it: the store, inside the transaction that read the snapshot, which
writes the decision fenced by the partition's version, which every enqueue
bumps, so a decision made on stale knowledge loses and is taken again. Two
transactions do: the commit of a result batch, for each partition whose last
available item at its gate the batch answered (the fan-in point: the next
gate is claimable when the commit returns), and
:meth:`~feedwatch.store.processing.ProcessingQueries.evaluate_checkpoint`, when
a claim finds nothing due (items waiting for a retry, a gate moved by hand, a
commit whose fate was unknown).
The engine hands the rule to the store as an argument: the store stays below
the engine and imports nothing from it, and the rule stays here, testable as a
table without a database.

The gate the owner keeps in memory is only a cache: a checkpoint (like a claim)
reads the partition's gate, and a gate moved by hand replaces the cached one at
once. Under the ``block`` policy a failed item also stops the partition when
the gate was moved past it by hand: it may never close ``complete``.
"""

from __future__ import annotations

from collections.abc import Callable

from feedwatch.engine.clock import Clock
from feedwatch.engine.leases import Lease, LeaseTable
from feedwatch.engine.threads import Offload
from feedwatch.observability.actions import Action
from feedwatch.observability.metrics import Metrics
from feedwatch.settings import FeedSettings
from feedwatch.store import Store
from feedwatch.store.records import CheckpointDecision, CheckpointPolicy, GateSnapshot


def next_step(snapshot: GateSnapshot) -> CheckpointDecision:
    """What the partition does next; ``gate`` in the answer is its gate after the step."""
    s, gate, now = snapshot, snapshot.gate, snapshot.now
    at_gate = [a for a in s.available if a.gate == gate]
    if at_gate:
        due = at_gate[0].due
        if due <= now:
            return CheckpointDecision("work", gate, due)
        if (due - now).total_seconds() <= s.hold_for:
            return CheckpointDecision("held", gate, due)
        return CheckpointDecision("waiting", gate, due)
    later = [a for a in s.available if a.gate > gate]
    failed = s.failed
    # A failed item blocks its gate, and a gate moved past it by hand (or a
    # feed switched from skip) still may not let the partition complete.
    if failed is not None and s.failure_policy == "block" and (failed.gate <= gate or not later):
        return CheckpointDecision(
            "failed", gate, None, f"item {failed.id!r} failed at gate {failed.gate}: {failed.error}"
        )
    if later:
        following = later[0]
        if s.manual_checkpoint:
            return CheckpointDecision(
                "idle", gate, None, f"gate {gate} done; manual checkpoint waits for the producer"
            )
        return CheckpointDecision(
            "advanced", following.gate, max(following.due, now), f"gate {gate} -> {following.gate}"
        )
    if s.auto_close:
        return CheckpointDecision("completed", gate)
    return CheckpointDecision("idle", gate)


class Checkpointer:
    """Asks the store what a partition with nothing to claim does next, and follows the answer.

    ``hold_for``: seconds within which a partition whose next item is due
    stays held (the lease kept) rather than released.
    """

    def __init__(
        self,
        *,
        store: Store,
        feed: str,
        owner: str,
        feed_settings: Callable[[], FeedSettings],
        clock: Clock,
        leases: LeaseTable,
        run: Offload,
        metrics: Metrics,
        hold_for: float,
    ) -> None:
        self._store = store
        self._feed = feed
        self._owner = owner
        self._feed_settings = feed_settings
        self._clock = clock
        self._leases = leases
        self._run = run
        self._metrics = metrics
        self._hold_for = hold_for

    def policy(self) -> CheckpointPolicy:
        """The rules a checkpoint follows now (the feed's settings may change at any renewal)."""
        s = self._feed_settings()
        return CheckpointPolicy(
            auto_close=s.auto_close,
            manual_checkpoint=s.manual_checkpoint,
            failure_policy=s.failure_policy,
            hold_for=self._hold_for,
            rule=next_step,
        )

    async def checkpoint(self, lease: Lease) -> bool:
        """Evaluate the lease's partition; return True if it has work to claim now."""
        s = self._feed_settings()
        decision: CheckpointDecision = await self._run(
            self._store.evaluate_checkpoint,
            self._feed,
            self._owner,
            lease.pk,
            now=self._clock.now(),
            auto_close=s.auto_close,
            manual_checkpoint=s.manual_checkpoint,
            failure_policy=s.failure_policy,
            history=s.history,
            hold_for=self._hold_for,
            rule=next_step,
        )
        return await self.follow(lease, decision)

    async def follow(self, lease: Lease, decision: CheckpointDecision) -> bool:
        """Act on a decision the store wrote (or found nothing to write for); True if work is due now."""
        s, clock, leases = self._feed_settings(), self._clock, self._leases
        mono = clock.monotonic()
        if decision.action in ("work", "held"):
            leases.follow_gate(lease, decision.gate)
        match decision.action:
            case "work":
                lease.empty_work += 1
                if lease.empty_work > 2:
                    # Due items we cannot claim: claims of this epoch whose results were
                    # lost. Re-acquiring starts a new epoch that may claim them again.
                    leases.drop(lease, Action.LEASE_RELEASED, "released to re-claim items left unanswered")
                    await self._run(
                        self._store.release_leases,
                        self._feed,
                        self._owner,
                        [lease.pk],
                        now=clock.now(),
                        history=s.history,
                    )
                    return False
                return True
            case "held":
                ready = decision.ready_at or clock.now()
                lease.idle_until = mono + max((ready - clock.now()).total_seconds(), 0.0)
                return False
            case "advanced":
                lease.gate = decision.gate
                lease.empty_work = 0
                self._metrics.gate_advances.inc()
                leases.event(lease, Action.GATE_ADVANCED, decision.message or f"gate -> {decision.gate}")
                return True
            case "completed":
                self._metrics.closed("complete")
                leases.drop(lease, Action.PARTITION_COMPLETED, f"{lease.id!r} complete")
            case "failed":
                self._metrics.closed("failed")
                leases.drop(lease, Action.PARTITION_FAILED, decision.message or f"{lease.id!r} failed")
            case "waiting":
                leases.drop(
                    lease, Action.LEASE_RELEASED, f"{lease.id!r} waits for retries until {decision.ready_at}"
                )
            case "idle":
                leases.drop(lease, Action.LEASE_RELEASED, decision.message or f"{lease.id!r} idle")
            case "lost":
                leases.drop(lease, Action.LEASE_LOST, f"{lease.id!r} changed hands during a checkpoint")
        return False
