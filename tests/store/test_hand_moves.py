"""What a lease holder's claims and checkpoints learn from the partition row (every database).

A gate moved by hand (``feedwatch gate``) reaches the owner at its next claim
or checkpoint, and a suspect waiting in a new lease is reported before any
other work is claimed from the watcher's leases.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from feedwatch import Feed, Store
from feedwatch.engine.gating import next_step
from feedwatch.store.records import (
    CheckpointDecision,
    ClaimBatch,
    Claimed,
    ClaimRequest,
    ItemOutcome,
    LeaseRow,
)

pytestmark = pytest.mark.store


def _lease(store: Store, feed: Feed, owner: str = "w1") -> LeaseRow:
    now = store.now()
    [lease] = store.acquire_leases(
        feed.name, owner, now=now, until=now + timedelta(seconds=30), limit=10, history=True
    )
    return lease


def _claim(store: Store, feed: Feed, lease: LeaseRow, gate: int) -> ClaimBatch:
    request = ClaimRequest(lease.pk, lease.lease_epoch, gate, 10)
    return store.claim_batch(feed.name, "w1", [request], now=store.now(), max_unanswered=3, history=True)


def _outcome(pk: int, claimed: Claimed, *, failed: bool = False) -> ItemOutcome:
    return ItemOutcome(
        pk=claimed.pk, partition_pk=pk, version=claimed.version,
        kind="fail" if failed else "complete", status="failed" if failed else "complete",
        gate=claimed.gate, next_attempt_at=datetime(2020, 1, 1), failures=1 if failed else 0,
        polls=0, attempt=claimed.attempt, error="broken input" if failed else None,
    )  # fmt: skip


def _checkpoint(store: Store, feed: Feed, lease: LeaseRow, policy: str) -> CheckpointDecision:
    return store.evaluate_checkpoint(
        feed.name, "w1", lease.pk, now=store.now(), auto_close=True, manual_checkpoint=False,
        failure_policy=policy, history=True, hold_for=0.0, rule=next_step,
    )  # fmt: skip


def test_a_claim_at_a_gate_moved_by_hand_claims_nothing_and_names_the_gate_now(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"late": 1}, gate=1)
    lease = _lease(store, feed)
    assert lease.gate == 1
    assert feed.set_gate("p", 0) == 1  # moved back by hand while w1 holds it
    feed.enqueue("p", {"early": 0})  # the producer's default: the partition's gate now
    stale = _claim(store, feed, lease, gate=1)
    assert (stale.claimed, stale.moved, stale.lost) == ({}, {lease.pk: 0}, set())
    fresh = _claim(store, feed, lease, gate=0)
    assert [c.id for c in fresh.claimed[lease.pk]] == ["early"] and fresh.moved == {}
    assert [i.status for i in feed.items("p", gate=1)] == ["available"], "gate 1 waits its turn"


def test_a_block_partition_moved_past_a_failed_item_by_hand_fails_instead_of_completing(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"bad": 1, "good": 2})
    feed.enqueue("p", {"next": 3}, gate=1)
    lease = _lease(store, feed)
    bad, good = _claim(store, feed, lease, gate=0).claimed[lease.pk]
    store.commit_results(
        feed.name,
        "w1",
        [_outcome(lease.pk, bad, failed=True), _outcome(lease.pk, good)],
        now=store.now(),
        history=True,
    )
    feed.set_gate("p", 1)  # before the owner's checkpoint could fail the partition at gate 0
    assert _claim(store, feed, lease, gate=0).moved == {lease.pk: 1}
    [nxt] = _claim(store, feed, lease, gate=1).claimed[lease.pk]
    store.commit_results(feed.name, "w1", [_outcome(lease.pk, nxt)], now=store.now(), history=True)
    decision = _checkpoint(store, feed, lease, "block")
    assert decision.action == "failed"
    assert decision.message is not None and decision.message.startswith(
        "item 'bad' failed at gate 0: broken input"
    )
    part = feed.partition("p")
    assert (part.status, part.owner) == ("failed", None), "invariant 2: never complete past a failure"


def test_a_skip_partition_moved_past_a_failed_item_completes_around_it(feed: Feed, store: Store) -> None:
    feed.update(failure_policy="skip")
    feed.enqueue("p", {"bad": 1})
    feed.enqueue("p", {"next": 3}, gate=1)
    lease = _lease(store, feed)
    [bad] = _claim(store, feed, lease, gate=0).claimed[lease.pk]
    store.commit_results(
        feed.name, "w1", [_outcome(lease.pk, bad, failed=True)], now=store.now(), history=True
    )
    feed.set_gate("p", 1)
    [nxt] = _claim(store, feed, lease, gate=1).claimed[lease.pk]
    store.commit_results(feed.name, "w1", [_outcome(lease.pk, nxt)], now=store.now(), history=True)
    assert _checkpoint(store, feed, lease, "skip").action == "completed"
    assert {i.id: i.status for i in feed.items("p")} == {"bad": "failed", "next": "complete"}


def test_a_checkpoint_after_a_hand_move_decides_at_the_gate_the_database_holds(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1}, gate=2)
    lease = _lease(store, feed)
    feed.set_gate("p", 0)
    feed.enqueue("p", {"z": 0})
    decision = _checkpoint(store, feed, lease, "block")
    assert (decision.action, decision.gate) == ("work", 0)


def test_a_suspect_in_a_probed_lease_stops_the_claim_and_is_named(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"suspect": 0, **{f"i{n}": n for n in range(5)}})
    feed.enqueue("q", {f"j{n}": n for n in range(5)})
    now = store.now()
    # A watcher that dies with "suspect" in flight.
    held = store.acquire_leases(
        feed.name, "dead", now=now, until=now + timedelta(seconds=1), limit=10, history=True
    )
    [dead] = [lease for lease in held if lease.id == "p"]
    request = ClaimRequest(dead.pk, dead.lease_epoch, 0, 1)
    first = store.claim_batch(feed.name, "dead", [request], now=now, max_unanswered=3, history=True)
    assert [c.id for c in first.claimed[dead.pk]] == ["suspect"]
    later = now + timedelta(seconds=2)
    leases = store.acquire_leases(
        feed.name, "w1", now=later, until=later + timedelta(seconds=30), limit=10, history=True
    )
    assert sorted(lease.id for lease in leases) == ["p", "q"]
    requests = [ClaimRequest(lease.pk, lease.lease_epoch, 0, 3) for lease in leases]
    pk = {lease.id: lease.pk for lease in leases}
    busy = store.claim_batch(
        feed.name, "w1", requests, now=later, max_unanswered=3, history=True, probe={pk["p"], pk["q"]}
    )
    assert (busy.claimed, busy.suspects) == ({}, {pk["p"]}), "nothing starts while a suspect waits"
    unprobed = store.claim_batch(
        feed.name, "w1", requests, now=later, max_unanswered=3, history=True, probe={pk["q"]}
    )
    assert unprobed.suspects == set() and sorted(unprobed.claimed) == sorted(pk.values())
    alone = store.claim_batch(
        feed.name, "w1", requests, now=later, max_unanswered=3, history=True, suspects=True
    )
    assert [(c.id, c.suspect, c.attempt) for c in alone.claimed[pk["p"]]] == [("suspect", True, 2)]
    assert list(alone.claimed) == [pk["p"]], "a suspect is claimed alone"
