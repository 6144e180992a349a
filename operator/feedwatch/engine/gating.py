"""Checkpoints: what a partition does once nothing at its gate is left to claim.

The store decides and writes in one transaction (see
:meth:`~feedwatch.store.processing.ProcessingQueries.evaluate_checkpoint`):
advance to the lowest gate that still has available items, fail the partition
on a failed item under the ``block`` policy, close it when everything is
complete (auto-close), or let it go idle. The decision is fenced by the
partition's version, which every enqueue bumps, so a decision made on stale
knowledge loses and is taken again.

The gate the owner keeps in memory is only a cache: a checkpoint (like a claim)
reads the partition's gate, and a gate moved by hand replaces the cached one at
once. Under the ``block`` policy a failed item also stops the partition when
the gate was moved past it by hand: it may never close ``complete``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from feedwatch.store.records import CheckpointDecision

if TYPE_CHECKING:
    from feedwatch.engine.leasing import Lease
    from feedwatch.engine.watcher import Watcher


async def checkpoint(w: Watcher, lease: Lease) -> bool:
    """Evaluate the lease's partition; return True if it has work to claim now."""
    s = w.feed_settings
    decision: CheckpointDecision = await w.db(
        w.store.evaluate_checkpoint,
        w.feed,
        w.owner,
        lease.pk,
        w.clock.now(),
        auto_close=s.auto_close,
        manual_checkpoint=s.manual_checkpoint,
        failure_policy=s.failure_policy,
        history=s.history,
        hold_for=w.settings.renewal_period,
    )
    mono = w.clock.monotonic()
    if decision.action in ("work", "held"):
        w.dispatcher.follow_gate(lease, decision.gate)
    match decision.action:
        case "work":
            lease.empty_work += 1
            if lease.empty_work > 2:
                # Due items we cannot claim: claims of this epoch whose results were
                # lost. Re-acquiring starts a new epoch that may claim them again.
                w.drop(lease, "lease_released", "released to re-claim items left unanswered")
                await w.db(w.store.release_leases, w.feed, w.owner, [lease.pk], w.clock.now(), s.history)
                return False
            return True
        case "held":
            ready = decision.ready_at or w.clock.now()
            lease.idle_until = mono + max((ready - w.clock.now()).total_seconds(), 0.0)
            return False
        case "advanced":
            lease.gate = decision.gate
            lease.empty_work = 0
            w.metrics.gate_advances.inc()
            w.event(lease, "gate_advanced", decision.message or f"gate -> {decision.gate}")
            return True
        case "completed":
            w.metrics.closed("complete")
            w.drop(lease, "partition_completed", f"{lease.id!r} complete")
        case "failed":
            w.metrics.closed("failed")
            w.drop(lease, "partition_failed", decision.message or f"{lease.id!r} failed")
        case "waiting":
            w.drop(lease, "lease_released", f"{lease.id!r} waits for retries until {decision.ready_at}")
        case "idle":
            w.drop(lease, "lease_released", decision.message or f"{lease.id!r} idle")
        case "lost":
            w.drop(lease, "lease_lost", f"{lease.id!r} changed hands during a checkpoint")
    return False
