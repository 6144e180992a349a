"""Faults of the watchers themselves: killed, frozen, on a skewed clock, outlived by their handler.

Each test runs ``feedwatch watch`` processes on MariaDB and on PostgreSQL
with the recording handler, injects its fault, measures how long the system
took to recover, and then checks the whole promise with
:func:`tests.support.fault_checks.verify`.
"""

from __future__ import annotations

import os
import random
import signal
import time
from datetime import datetime

import pytest

from feedwatch import Store
from feedwatch.testing import wait_for
from tests.support.fault_checks import Call, Expected, read_state, verify
from tests.support.faults import (
    HandlerProcess,
    OwnServer,
    RecoveryLog,
    Scenario,
    WatcherProcess,
    busy_watcher,
    enqueue_workload,
    held_by,
    locking_transactions,
    wait_drained,
    wait_taken_over,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEED = int(os.environ.get("FEEDWATCH_FAULTS_SEED", "7"))


def test_sigkill_mid_batch_loses_nothing_and_commits_each_item_once(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    rng = random.Random(SEED)
    handler = scenario.handler(last_gate=2, delay=0.15)
    feed = scenario.feed(shared_url)
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=40, last_gate=2)
    fleet = scenario.fleet(shared_url, feed, handler)
    fleet.start(3)
    store = feed.store
    takeovers = []
    for _ in range(3):
        time.sleep(rng.uniform(0.2, 1.0))  # a random moment...
        victim = busy_watcher(store, feed.name, fleet, handler, rng=rng)  # ...with calls in flight
        held = held_by(store, feed.name, victim)
        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        fleet.start(1)  # the pod comes back, with a new owner id
        wait_taken_over(store, feed.name, victim, held, 60)
        takeovers.append(time.monotonic() - killed)
        recovery.record(
            f"1. {database}: SIGKILL mid-batch", "kill -> its partitions leased again", takeovers[-1],
            f"({len(held)} partitions, lease 2 s)",
        )  # fmt: skip
    drained = wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    report = verify(store, feed.name, expected, handler.calls(feed.name))
    print(f"SIGKILL x3: {report}; drained {drained:.1f} s after the last takeover")
    assert all(t < 15 for t in takeovers), takeovers


def stop_at(victim: WatcherProcess, handler: HandlerProcess, store: Store, *, holding_locks: bool) -> None:
    """SIGSTOP ``victim`` with calls in flight: outside any transaction, or inside one that
    holds row locks."""
    attempts = 0
    give_up = time.monotonic() + 30
    while attempts < 300 and time.monotonic() < give_up:
        if not handler.calling(victim.name):
            time.sleep(0.02)
            continue
        attempts += 1
        victim.signal(signal.SIGSTOP)
        time.sleep(0.05)
        locking = locking_transactions(store, victim.pid) > 0
        if not holding_locks and not locking:
            return
        if holding_locks and locking:
            # Frozen inside a transaction that holds row locks. Whether the others run into
            # them before the server ends the idle transaction (after one lease) is timing;
            # either way they must finish every item while it stays frozen.
            print(f"2b: caught inside a locking transaction after {attempts} tries")
            return
        victim.signal(signal.SIGCONT)
        time.sleep(random.uniform(0.01, 0.06))
    if holding_locks:
        # Its write transactions are short: on a busy machine the sampling above can miss
        # them. Freeze it with calls in flight anyway; the others must still finish.
        # If the sampling's stops cost it its leases, it may have nothing left to call:
        # freeze it then too; the others must finish every item either way.
        deadline = time.monotonic() + 30
        while not handler.calling(victim.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = handler.calling(victim.name)
        victim.signal(signal.SIGSTOP)
        print(f"2b: not caught inside a locking transaction in {attempts} tries; frozen (busy={busy})")
        return
    raise AssertionError(f"never caught {victim.name} outside any transaction")


def committed_elsewhere(store: Store, feed: str, calls: list[Call], owner: str) -> bool:
    """Whether each of ``calls`` has a result committed at its gate by an owner other than ``owner``."""
    state = read_state(store, feed)
    dispatched: dict[tuple[str, str | None, int], int] = {}
    done: set[tuple[str, str | None, int]] = set()
    for e in state.history:
        if e.event == "dispatched":
            dispatched[(e.partition, e.item, e.from_version + 1)] = e.gate
        elif e.event in ("complete", "gate") and e.owner != owner:
            gate = dispatched.get((e.partition, e.item, e.from_version))
            if gate is not None:
                done.add((e.partition, e.item, gate))
    return all((c.partition, c.item, c.gate) in done for c in calls)


def test_sigstop_past_the_lease_late_results_are_rejected_and_the_lease_is_lost(
    scenario: Scenario, database: str, own_server: OwnServer, recovery: RecoveryLog
) -> None:
    """On a server of the suite's own: a frozen client holds its locks (on MariaDB its
    metadata locks too), whoever shares the server."""
    url = own_server.app_url
    handler = scenario.handler(last_gate=1, delay=0.4)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=30, last_gate=1)
    fleet = scenario.fleet(url, feed, handler)
    fleet.start(2)
    victim = fleet.start(1, env={"FEEDWATCH_LOG_LEVEL": "DEBUG"})[0]
    owner = victim.owner()
    wait_for(lambda: held_by(store, feed.name, victim), timeout=30, message=f"{victim.name} to lease")
    stop_at(victim, handler, store, holding_locks=False)
    stopped = time.monotonic()
    held = held_by(store, feed.name, victim)
    in_flight = [c for c in handler.calls(feed.name) if c.watcher == victim.name and c.t > time.time() - 0.6]
    assert held and in_flight, "the victim was stopped holding partitions with calls in flight"
    wait_taken_over(store, feed.name, victim, held, 30)
    recovery.record(
        f"2. {database}: SIGSTOP > lease", "stop -> its partitions taken over", time.monotonic() - stopped
    )
    wait_for(
        lambda: committed_elsewhere(store, feed.name, in_flight, owner),
        timeout=60,
        message="the stopped watcher's items in flight to be committed by the others",
    )
    victim.signal(signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: victim.actions("lease_lost"), timeout=30, message=f"{victim.name} to log lease_lost")
    recovery.record(
        f"2. {database}: SIGSTOP > lease", "SIGCONT -> it logs lease_lost", time.monotonic() - resumed
    )
    rejected = wait_for(
        lambda: victim.actions("lost_race"), timeout=30, message="its late results to be rejected"
    )
    wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    report = verify(store, feed.name, expected, handler.calls(feed.name))
    print(f"SIGSTOP: {len(rejected)} late results rejected; {report}")


def test_sigstop_inside_a_transaction_does_not_stall_the_other_watchers(
    scenario: Scenario, database: str, own_server: OwnServer, recovery: RecoveryLog
) -> None:
    """A watcher frozen while it holds row locks must not hold the feed hostage.

    Its open transaction keeps its row locks on the server; the others must
    still renew their own leases, take its partitions once its lease expires
    and finish every item while it stays frozen (for instance because each
    session bounds how long a transaction may sit idle and how long a lock
    wait may last, both shorter than a lease). It runs on a server of the
    suite's own: the frozen transaction would hold up whoever shares the server.
    """
    url = own_server.app_url
    # Enough slow work that the victim is still busy when it is caught.
    handler = scenario.handler(last_gate=1, delay=0.3)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=150, last_gate=1)
    fleet = scenario.fleet(url, feed, handler)
    victim, *_ = fleet.start(3)
    wait_for(lambda: held_by(store, feed.name, victim), timeout=30, message=f"{victim.name} to lease")
    stop_at(victim, handler, store, holding_locks=True)
    stopped = time.monotonic()
    try:
        wait_drained(store, feed.name, 120)
        recovery.record(
            f"2b. {database}: SIGSTOP inside a transaction", "stop -> the others finish every item",
            time.monotonic() - stopped,
        )  # fmt: skip
    finally:
        victim.signal(signal.SIGCONT)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_sigkill_with_the_history_table_off_checked_from_the_handler_log_and_final_state(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    handler = scenario.handler(last_gate=2, delay=0.15)
    feed = scenario.feed(shared_url, history=False)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=20, last_gate=2)
    fleet = scenario.fleet(shared_url, feed, handler)
    fleet.start(3)
    victim = busy_watcher(store, feed.name, fleet, handler)
    held = held_by(store, feed.name, victim)
    victim.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_taken_over(store, feed.name, victim, held, 60)
    recovery.record(
        f"1. {database}: SIGKILL, history off",
        "kill -> its partitions leased again",
        time.monotonic() - killed,
    )
    wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    report = verify(store, feed.name, expected, handler.calls(feed.name), history=False)
    print(f"history off: {report}")


def test_a_watcher_clock_skewed_by_tens_of_seconds_changes_nothing(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    """Leases are judged by database time: a watcher 40 s ahead or behind neither steals nor stalls."""
    handler = scenario.handler(last_gate=1, delay=0.2)
    feed = scenario.feed(shared_url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=40, last_gate=1)
    fleet = scenario.fleet(shared_url, feed, handler)
    normal = fleet.start(1)[0]
    wait_for(lambda: len(held_by(store, feed.name, normal)) == 6, timeout=30, message="w1 to lease all")
    ahead = fleet.start(1, prefix=["faketime", "-f", "+40s"])[0]
    behind = fleet.start(1, prefix=["faketime", "-f", "-40s"])[0]
    for w, skew in ((ahead, 40), (behind, -40)):
        logged = datetime.fromisoformat(w.actions("watcher_started")[0]["time"]).timestamp()
        assert abs(logged - time.time() - skew) < 15, f"{w.name}'s clock is not skewed by {skew} s"
    # The skewed watchers get partitions by balancing (hand-offs), never by taking live leases.
    wait_for(
        lambda: all(held_by(store, feed.name, w) for w in (normal, ahead, behind)),
        timeout=30,
        message="every watcher to hold partitions",
    )
    assert not [e for e in read_state(store, feed.name).history if e.event == "lease_taken"]
    assert not normal.actions("lease_lost"), "a skewed clock cost a live watcher its lease"
    held = held_by(store, feed.name, normal)
    normal.signal(signal.SIGKILL)
    killed = time.monotonic()
    wait_for(
        lambda: not set(held) & set(held_by(store, feed.name, normal)),
        timeout=30,
        message="the skewed watchers to take over the killed watcher's partitions",
    )
    takeover = time.monotonic() - killed
    recovery.record(
        f"6. {database}: clock skew +-40 s", "kill of the unskewed watcher -> skewed ones take over",
        takeover,
        "(lease 2 s: expiry judged by database time)",
    )  # fmt: skip
    assert 0.5 < takeover < 10, "takeover should take about one lease, by database time"
    wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    taken = [e for e in read_state(store, feed.name).history if e.event == "lease_taken"]
    assert taken, "the killed watcher's leases were taken after they expired"
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_a_handler_slower_than_the_lease_is_called_once_per_item(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    """The lease is renewed while calls are in flight: nobody else starts the same item."""
    handler = scenario.handler(last_gate=1, delay=0.05, delay_prefix="slow", delay_items=4.0)
    feed = scenario.feed(shared_url)
    store = feed.store
    expected = Expected()
    fleet = scenario.fleet(shared_url, feed, handler)
    # A hand-off waits for calls in flight up to the grace period: longer than the slowest call.
    fleet.start(3, args=["--handler-timeout", "20", "--grace-period", "15"])
    for p in range(6):
        part = f"p{p}"
        items = {f"slow{i}": expected.add(part, f"slow{i}", 1) for i in range(3)}
        items |= {f"i{i:03d}": expected.add(part, f"i{i:03d}", 1) for i in range(15)}
        feed.enqueue(part, items)
    drained = wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    calls = handler.calls(feed.name)
    per_item: dict[tuple[str, str, int], int] = {}
    for c in calls:
        per_item[(c.partition, c.item, c.gate)] = per_item.get((c.partition, c.item, c.gate), 0) + 1
    repeated = {k: n for k, n in per_item.items() if n > 1}
    assert not repeated, f"items called more than once at a gate: {repeated}"
    assert not any(w.actions("lease_lost") for w in fleet.watchers)
    slow = [c for c in calls if c.item.startswith("slow")]
    assert len(slow) == 6 * 3 * 2
    recovery.record(
        f"9. {database}: handler slower than the lease", "drain with 4 s calls, lease 2 s", drained,
        "(0 repeated calls)",
    )  # fmt: skip
    verify(store, feed.name, expected, calls)
