"""Checkpoint evaluation: the store reads the partition, the gate rule decides, the store writes it.

``Store.evaluate_checkpoint`` with the engine's rule (``next_step``), on every
database: what each decision leaves in the partition row (gate, status,
lease, ``ready_at``, version) and in its history, and the refusals: another
owner, a partition that is gone or closed, and a decision written at a
version a producer has moved since.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import update

from feedwatch import Feed, Store
from feedwatch.engine.gating import next_step
from feedwatch.store.records import (
    CheckpointDecision,
    Claimed,
    ClaimRequest,
    HistoryRow,
    ItemOutcome,
    LeaseRow,
    PartitionRow,
)

pytestmark = pytest.mark.store


def _lease(store: Store, feed: Feed, owner: str = "w1") -> LeaseRow:
    now = store.now()
    [lease] = store.acquire_leases(
        feed.name, owner, now=now, until=now + timedelta(seconds=30), limit=1, history=True
    )
    return lease


def _checkpoint(
    store: Store,
    feed: Feed,
    pk: int,
    *,
    owner: str = "w1",
    policy: str = "block",
    auto_close: bool = True,
    manual: bool = False,
    hold_for: float = 0.0,
) -> CheckpointDecision:
    return store.evaluate_checkpoint(
        feed.name, owner, pk, now=store.now(), auto_close=auto_close, manual_checkpoint=manual,
        failure_policy=policy, history=True, hold_for=hold_for, rule=next_step,
    )  # fmt: skip


def _claim(store: Store, feed: Feed, lease: LeaseRow, gate: int) -> list[Claimed]:
    request = ClaimRequest(lease.pk, lease.lease_epoch, gate, 100)
    batch = store.claim_batch(feed.name, "w1", [request], now=store.now(), max_unanswered=3, history=True)
    return batch.claimed.get(lease.pk, [])


def _answer(
    store: Store, feed: Feed, lease: LeaseRow, claimed: Claimed, *, kind: str = "complete",
    retry_at: datetime | None = None,
) -> None:  # fmt: skip
    """Commit one answer: complete, fail, or retry (available again at ``retry_at``)."""
    status = {"complete": "complete", "fail": "failed", "retry": "available"}[kind]
    outcome = ItemOutcome(
        pk=claimed.pk, partition_pk=lease.pk, version=claimed.version, kind=kind,  # type: ignore[arg-type]
        status=status, gate=claimed.gate, next_attempt_at=retry_at or datetime(2020, 1, 1),
        failures=0 if kind == "complete" else 1, polls=0, attempt=claimed.attempt,
        error="broken input" if kind == "fail" else None,
    )  # fmt: skip
    assert store.commit_results(feed.name, "w1", [outcome], now=store.now(), history=True).won == {claimed.pk}


def _finish_gate(store: Store, feed: Feed, lease: LeaseRow, gate: int) -> None:
    for claimed in _claim(store, feed, lease, gate):
        _answer(store, feed, lease, claimed)


def _partition_history(store: Store, part: PartitionRow) -> list[HistoryRow]:
    """The partition's own history rows (not its items')."""
    return [h for h in store.history(part.pk) if h.item_pk is None]


# -- decisions that write nothing ------------------------------------------------------


def test_a_checkpoint_with_due_items_at_the_gate_says_work_and_writes_nothing(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    before, history = feed.partition("p"), store.history(lease.pk)
    decision = _checkpoint(store, feed, lease.pk)
    assert (decision.action, decision.gate) == ("work", 0)
    assert feed.partition("p") == before
    assert store.history(lease.pk) == history


def test_a_checkpoint_whose_next_item_is_due_within_hold_for_keeps_the_lease(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    due = store.now() + timedelta(seconds=60)
    [claimed] = _claim(store, feed, lease, 0)
    _answer(store, feed, lease, claimed, kind="retry", retry_at=due)
    before, history = feed.partition("p"), store.history(lease.pk)
    decision = _checkpoint(store, feed, lease.pk, hold_for=120)
    assert (decision.action, decision.gate, decision.ready_at) == ("held", 0, due)
    assert feed.partition("p") == before, "held: the lease and the row stay as they are"
    assert store.history(lease.pk) == history


# -- decisions written ---------------------------------------------------------------


def test_a_checkpoint_at_a_finished_gate_advances_to_the_next_and_keeps_the_lease(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("p", {"b": 2}, gate=2)
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    before = feed.partition("p")
    decision = _checkpoint(store, feed, lease.pk)
    assert (decision.action, decision.gate, decision.message) == ("advanced", 2, "gate 0 -> 2")
    after = feed.partition("p")
    assert (after.gate, after.status, after.owner, after.version) == (
        2,
        "available",
        "w1",
        before.version + 1,
    )
    assert after.ready_at == decision.ready_at and after.lease_epoch == before.lease_epoch
    [advanced] = _partition_history(store, after)[-1:]
    assert (advanced.event, advanced.from_version, advanced.gate, advanced.owner) == (
        "gate_advanced",
        before.version,
        2,
        "w1",
    )
    assert [c.id for c in _claim(store, feed, lease, 2)] == ["b"], "the same lease works the next gate"


def test_a_checkpoint_with_nothing_left_completes_the_partition_and_ends_the_lease(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    before = feed.partition("p")
    assert _checkpoint(store, feed, lease.pk).action == "completed"
    after = feed.partition("p")
    assert (after.status, after.owner, after.lease_until, after.ready_at, after.error) == (
        "complete",
        None,
        None,
        None,
        None,
    )
    assert after.version == before.version + 1
    [completed] = _partition_history(store, after)[-1:]
    assert (completed.event, completed.from_status, completed.to_status, completed.from_version) == (
        "partition_completed",
        "available",
        "complete",
        before.version,
    )


def test_a_checkpoint_past_a_failed_item_under_block_fails_the_partition_and_names_the_item(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"bad": 1, "good": 2})
    lease = _lease(store, feed)
    bad, good = _claim(store, feed, lease, 0)
    _answer(store, feed, lease, bad, kind="fail")
    _answer(store, feed, lease, good)
    before = feed.partition("p")
    decision = _checkpoint(store, feed, lease.pk, policy="block")
    message = "item 'bad' failed at gate 0: broken input"
    assert (decision.action, decision.message) == ("failed", message)
    after = feed.partition("p")
    assert (after.status, after.error, after.owner, after.ready_at) == ("failed", message, None, None)
    assert after.version == before.version + 1
    [failed] = _partition_history(store, after)[-1:]
    assert (failed.event, failed.to_status, failed.message) == ("partition_failed", "failed", message)


def test_a_checkpoint_past_a_failed_item_under_skip_completes_around_it(feed: Feed, store: Store) -> None:
    feed.update(failure_policy="skip")
    feed.enqueue("p", {"bad": 1, "good": 2})
    lease = _lease(store, feed)
    bad, good = _claim(store, feed, lease, 0)
    _answer(store, feed, lease, bad, kind="fail")
    _answer(store, feed, lease, good)
    assert _checkpoint(store, feed, lease.pk, policy="skip").action == "completed"
    assert feed.partition("p").status == "complete"


def test_a_checkpoint_whose_next_item_is_due_later_releases_the_lease_until_then(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    due = store.now() + timedelta(seconds=60)
    [claimed] = _claim(store, feed, lease, 0)
    _answer(store, feed, lease, claimed, kind="retry", retry_at=due)
    before = feed.partition("p")
    decision = _checkpoint(store, feed, lease.pk, hold_for=0)
    assert (decision.action, decision.ready_at) == ("waiting", due)
    after = feed.partition("p")
    assert (after.status, after.owner, after.lease_until, after.ready_at) == ("available", None, None, due)
    assert after.version == before.version + 1
    [released] = _partition_history(store, after)[-1:]
    assert (released.event, released.owner, released.from_version) == ("lease_released", "w1", before.version)


def test_a_manual_checkpoint_at_a_finished_gate_idles_the_partition_at_its_gate(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    feed.enqueue("p", {"b": 2}, gate=1)
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    decision = _checkpoint(store, feed, lease.pk, manual=True)
    assert (decision.action, decision.gate) == ("idle", 0)
    assert decision.message == "gate 0 done; manual checkpoint waits for the producer"
    after = feed.partition("p")
    assert (after.gate, after.status, after.owner, after.ready_at) == (0, "available", None, None)
    assert _partition_history(store, after)[-1].event == "lease_released"


def test_a_checkpoint_with_nothing_left_and_no_auto_close_idles_the_partition(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    assert _checkpoint(store, feed, lease.pk, auto_close=False).action == "idle"
    after = feed.partition("p")
    assert (after.status, after.owner, after.ready_at) == ("available", None, None)


# -- refusals ------------------------------------------------------------------------


def test_a_checkpoint_by_a_watcher_that_does_not_hold_the_partition_is_lost_and_writes_nothing(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    before, history = feed.partition("p"), store.history(lease.pk)
    decision = _checkpoint(store, feed, lease.pk, owner="w2")
    assert (decision.action, decision.gate) == ("lost", 0)
    assert feed.partition("p") == before, "not completed by a watcher that does not own it"
    assert store.history(lease.pk) == history


def test_a_checkpoint_of_a_partition_that_is_gone_or_closed_is_lost(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    _finish_gate(store, feed, lease, 0)
    assert _checkpoint(store, feed, lease.pk).action == "completed"
    history = store.history(lease.pk)
    assert _checkpoint(store, feed, lease.pk).action == "lost", "a complete partition is no one's"
    assert store.history(lease.pk) == history
    assert _checkpoint(store, feed, 2**31 - 1) == CheckpointDecision("lost", 0)


def test_a_decision_written_at_a_version_a_producer_moved_is_lost_and_leaves_no_history(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"a": 1})
    lease = _lease(store, feed)
    read = feed.partition("p").version
    p = store.tables.partitions
    with store.engine.begin() as conn:  # an enqueue committed between the read and the write
        conn.execute(update(p).where(p.c.pk == lease.pk).values(version=p.c.version + 1))
    history = store.history(lease.pk)
    now = store.now()
    with store.engine.begin() as conn:
        decisions = store._write_decisions(
            conn, feed.name, "w1", {lease.pk: read}, {lease.pk: CheckpointDecision("completed", 0)},
            now=now, history=True,
        )  # fmt: skip
    assert decisions == {lease.pk: CheckpointDecision("lost", 0)}
    after = feed.partition("p")
    assert (after.status, after.owner, after.version) == ("available", "w1", read + 1)
    assert store.history(lease.pk) == history
    assert _checkpoint(store, feed, lease.pk).action == "work", "evaluated again, it sees the item"
