"""The fan-in point: a result batch that empties a partition's gate decides its checkpoint itself.

``commit_results(..., checkpoint=policy)`` runs the gate rule in the
commit's transaction for every partition whose last available item at its gate
the batch answered, so the next gate is claimable as soon as the commit returns
(every database).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from feedwatch import Feed, Store
from feedwatch.engine.gating import next_step
from feedwatch.store.processing import CommitReport
from feedwatch.store.records import CheckpointPolicy, Claimed, ClaimRequest, ItemOutcome, LeaseRow

pytestmark = pytest.mark.store

POLICY = CheckpointPolicy(
    auto_close=True, manual_checkpoint=False, failure_policy="block", hold_for=0.0, rule=next_step
)


def _lease(store: Store, feed: Feed) -> LeaseRow:
    now = store.now()
    [lease] = store.acquire_leases(
        feed.name, "w1", now=now, until=now + timedelta(seconds=30), limit=10, history=True
    )
    return lease


def _claim(store: Store, feed: Feed, lease: LeaseRow, gate: int) -> list[Claimed]:
    request = ClaimRequest(lease.pk, lease.lease_epoch, gate, 10)
    batch = store.claim_batch(feed.name, "w1", [request], now=store.now(), max_unanswered=3, history=True)
    return batch.claimed.get(lease.pk, [])


def _one_item_claimed(store: Store, feed: Feed) -> tuple[LeaseRow, Claimed]:
    """Partition ``p``: item ``a`` at gate 0 (leased and claimed by w1), a fan-in item at gate 1."""
    feed.enqueue("p", {"a": 1})
    feed.enqueue("p", {"fan-in": 0}, gate=1)
    lease = _lease(store, feed)
    [a] = _claim(store, feed, lease, gate=0)
    return lease, a


def _done(lease: LeaseRow, claimed: Claimed) -> ItemOutcome:
    return ItemOutcome(
        pk=claimed.pk, partition_pk=lease.pk, version=claimed.version, kind="complete", status="complete",
        gate=claimed.gate, next_attempt_at=datetime(2020, 1, 1), failures=0, polls=0,
        attempt=claimed.attempt, error=None,
    )  # fmt: skip


def _commit(
    store: Store, feed: Feed, outcomes: list[ItemOutcome], checkpoint: CheckpointPolicy | None = None
) -> CommitReport:
    return store.commit_results(
        feed.name, "w1", outcomes, now=store.now(), history=True, checkpoint=checkpoint
    )


def test_the_batch_with_a_gates_last_results_advances_the_partition_in_its_commit(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1, "b": 2})
    feed.enqueue("p", {"fan-in": 0}, gate=1)
    lease = _lease(store, feed)
    a, b = _claim(store, feed, lease, gate=0)
    first = _commit(store, feed, [_done(lease, a)], checkpoint=POLICY)
    assert first.won == {a.pk} and first.decisions == {}, "b is still open at gate 0"
    assert feed.partition("p").gate == 0
    last = _commit(store, feed, [_done(lease, b)], checkpoint=POLICY)
    assert last.won == {b.pk}
    assert [(d.action, d.gate) for d in last.decisions.values()] == [("advanced", 1)]
    assert list(last.decisions) == [lease.pk]
    assert feed.partition("p").gate == 1
    events = [h.event for h in store.history(lease.pk)]
    assert events[-2:] == ["complete", "gate_advanced"], events
    [fan_in] = _claim(store, feed, lease, gate=1)
    assert fan_in.id == "fan-in"
    closing = _commit(store, feed, [_done(lease, fan_in)], checkpoint=POLICY)
    assert [d.action for d in closing.decisions.values()] == ["completed"]
    assert (feed.partition("p").status, feed.partition("p").owner) == ("complete", None)


def test_without_a_policy_the_commit_decides_nothing(feed: Feed, store: Store) -> None:
    lease, a = _one_item_claimed(store, feed)
    report = _commit(store, feed, [_done(lease, a)])
    assert report.won == {a.pk} and report.decisions == {}
    assert feed.partition("p").gate == 0, "the checkpoint waits for the owner's next round"


def test_an_item_enqueued_at_the_gate_before_the_commit_keeps_the_gate_open(feed: Feed, store: Store) -> None:
    lease, a = _one_item_claimed(store, feed)
    feed.enqueue("p", {"late": 2})  # at gate 0, while a is in flight
    report = _commit(store, feed, [_done(lease, a)], checkpoint=POLICY)
    assert report.won == {a.pk} and report.decisions == {}
    assert feed.partition("p").gate == 0


def test_a_partition_another_watcher_holds_is_not_decided(feed: Feed, store: Store) -> None:
    lease, a = _one_item_claimed(store, feed)
    report = store.commit_results(
        feed.name, "w2", [_done(lease, a)], now=store.now(), history=True, checkpoint=POLICY
    )
    assert report.decisions == {}, "only the owner decides its partitions"
    assert feed.partition("p").gate == 0


def test_only_the_partitions_named_emptying_are_looked_at(feed: Feed, store: Store) -> None:
    lease, a = _one_item_claimed(store, feed)
    report = store.commit_results(
        feed.name, "w1", [_done(lease, a)], now=store.now(), history=True, checkpoint=POLICY, emptying=()
    )
    assert report.won == {a.pk} and report.decisions == {}, "not named: left to the owner's next claim"
    assert feed.partition("p").gate == 0


def test_a_claim_says_which_partitions_it_drained(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {f"i{n}": n for n in range(3)})
    lease = _lease(store, feed)
    first = store.claim_batch(
        feed.name, "w1", [ClaimRequest(lease.pk, lease.lease_epoch, 0, 2)],
        now=store.now(), max_unanswered=3, history=True,
    )  # fmt: skip
    assert len(first.claimed[lease.pk]) == 2 and first.exhausted == set(), "a third item is due"
    second = store.claim_batch(
        feed.name, "w1", [ClaimRequest(lease.pk, lease.lease_epoch, 0, 2)],
        now=store.now(), max_unanswered=3, history=True,
    )  # fmt: skip
    assert len(second.claimed[lease.pk]) == 1 and second.exhausted == {lease.pk}
    assert [i.status for i in feed.items("p")] == ["available"] * 3, "claimed, not answered"
