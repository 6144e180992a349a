"""Faults between the watchers and their database, each on MariaDB and on PostgreSQL.

The server restarted (cleanly and by a crash) and turned read-only run on a
server of the suite's own; the network cut, black-holed, and the ambiguous
commit go through a TCP proxy (:mod:`tests.support.fault_proxy`) in front of
the shared one; the deadlock storm runs many watchers on few partitions.
Watchers must wait, reconnect and go on as the same processes.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime

import pytest

from feedwatch import GateError, Store
from feedwatch.testing import wait_for
from tests.support.fault_checks import Expected, verify
from tests.support.faults import (
    WATCHER_ARGS,
    Fleet,
    OwnServer,
    RecoveryLog,
    Scenario,
    count_items,
    enqueue_workload,
    wait_drained,
    wait_progress,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def _steady(store: Store, feed: str, quiet: float = 1.0) -> int | None:
    """The count of complete items once it has not changed for ``quiet`` seconds (else None)."""
    first = count_items(store, feed)
    deadline = time.monotonic() + quiet
    while time.monotonic() < deadline:
        if count_items(store, feed) != first:
            return None
        time.sleep(0.1)
    return first


def same_processes(fleet: Fleet, pids: dict[str, int]) -> None:
    """No crash loop: every watcher is still the process it was, started once."""
    for w in fleet.watchers:
        assert w.alive(), f"{w.name} died:\n{w.tail()}"
        assert pids[w.name] == w.pid
        assert len(w.actions("watcher_started")) == 1, f"{w.name} restarted"


def test_database_restarted_while_watchers_run(
    scenario: Scenario, database: str, own_server: OwnServer, recovery: RecoveryLog
) -> None:
    """A clean shutdown, then a crash: SIGKILL of ``mariadbd``; PostgreSQL's immediate
    shutdown (SIGQUIT), as killing its postmaster alone would leave its backends running."""
    url = own_server.app_url
    handler = scenario.handler(last_gate=2, delay=0.1)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=40, last_gate=2)
    fleet = scenario.fleet(url, feed, handler)
    fleet.start(3)
    pids = {w.name: w.pid for w in fleet.watchers}
    for kind, crash in (("clean restart", False), ("crash + restart", True)):
        wait_for(lambda: count_items(store, feed.name) > 30, timeout=60, message="some progress")
        done = count_items(store, feed.name)
        noticed = {w.name: len(w.actions("database_unavailable")) for w in fleet.watchers}
        own_server.shutdown(crash=crash)
        wait_for(lambda seen=noticed: all(  # type: ignore[misc]
                len(w.actions("database_unavailable")) > seen[w.name] for w in fleet.watchers
            ), timeout=30, message="every watcher to notice the database is gone")  # fmt: skip
        startup = own_server.start()
        back = time.monotonic()
        store.engine.dispose()  # the test's own pool: drop the connections of the old server
        took = wait_progress(store, feed.name, back, 60, count_items(store, feed.name))
        recovery.record(
            f"3. {database} {kind}", "server up -> first new commit", took,
            f"(server startup {startup:.1f} s; {done} items were complete)",
        )  # fmt: skip
        same_processes(fleet, pids)
    wait_drained(store, feed.name, 120)
    same_processes(fleet, pids)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_database_read_only_for_a_while_watchers_wait_and_resume(
    scenario: Scenario, database: str, own_server: OwnServer, recovery: RecoveryLog
) -> None:
    """MariaDB's ``read_only``; PostgreSQL's ``default_transaction_read_only``, reloaded."""
    url = own_server.app_url  # an unprivileged user: read-only applies to it
    handler = scenario.handler(last_gate=2, delay=0.1)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=40, last_gate=2)
    fleet = scenario.fleet(url, feed, handler)
    fleet.start(3)
    pids = {w.name: w.pid for w in fleet.watchers}
    wait_for(lambda: count_items(store, feed.name) > 30, timeout=60, message="some progress")
    own_server.set_read_only(True)
    seconds = 6.0
    try:
        # Transactions that began before the switch may still commit: wait until none does.
        frozen = wait_for(lambda: _steady(store, feed.name), timeout=10, message="writes to stop")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # the fault lasts this long: nothing may be written
            assert count_items(store, feed.name) == frozen, "a write got through read-only"
            time.sleep(0.5)
    finally:
        own_server.set_read_only(False)
    back = time.monotonic()
    took = wait_progress(store, feed.name, back, 60, frozen)
    recovery.record(f"12. {database} read-only for {seconds:g} s", "writable again -> first new commit", took)
    wait_drained(store, feed.name, 120)
    same_processes(fleet, pids)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_network_to_the_database_cut_and_black_holed_then_restored(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    handler = scenario.handler(last_gate=2, delay=0.15)
    feed = scenario.feed(shared_url)
    store = feed.store  # the checker's own connections bypass the proxy
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=30, last_gate=2)
    proxy, through = scenario.proxy(shared_url)
    fleet = scenario.fleet(through, feed, handler)
    fleet.start(3)
    pids = {w.name: w.pid for w in fleet.watchers}
    for kind, seconds in (("cut (connections reset, new ones refused)", 3.0), ("black hole", 5.0)):
        wait_for(lambda: count_items(store, feed.name) > 0, timeout=60, message="some progress")
        if kind.startswith("cut"):
            proxy.cut()
        else:
            proxy.pause()
        frozen = count_items(store, feed.name)
        deadline = time.monotonic() + seconds  # the outage lasts this long (> one lease for the black hole)
        while time.monotonic() < deadline:
            time.sleep(0.2)
        assert count_items(store, feed.name) == frozen, "a commit got through the outage"
        if kind.startswith("cut"):
            proxy.restore()
        else:
            proxy.resume()
        back = time.monotonic()
        took = wait_progress(store, feed.name, back, 60, frozen)
        recovery.record(
            f"4. {database}: network {kind} for {seconds:g} s", "restored -> first new commit", took
        )
        same_processes(fleet, pids)
    wait_drained(store, feed.name, 120)
    same_processes(fleet, pids)
    fleet.stop_and_check()
    verify(store, feed.name, expected, handler.calls(feed.name))


def test_connection_dropped_right_after_commit_is_resolved_by_the_commit_token(
    scenario: Scenario, database: str, shared_url: str, recovery: RecoveryLog
) -> None:
    """The proxy forwards a result COMMIT, lets the server apply it, and cuts the reply."""
    handler = scenario.handler(last_gate=1, delay=0.05)
    feed = scenario.feed(shared_url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=4, items=40, last_gate=1)
    proxy, through = scenario.proxy(shared_url)
    fleet = scenario.fleet(through, feed, handler)
    fleet.start(2)
    proxy.cut_after_commit(6)
    wait_for(
        lambda: len(proxy.commit_cuts) == 6, timeout=60, message="six result commits to be cut after COMMIT"
    )
    wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    resolved = [
        e for w in fleet.watchers for e in w.entries()
        if e["message"].startswith("ambiguous commit resolved as applied")
    ]  # fmt: skip
    assert len(resolved) == 6, f"each cut commit is resolved by its token: {resolved}"
    report = verify(store, feed.name, expected, handler.calls(feed.name))
    at = sorted(datetime.fromisoformat(e["time"]).timestamp() for e in resolved)
    latency = max(a - c for a, c in zip(at, sorted(proxy.commit_cuts), strict=True))
    recovery.record(
        f"8. {database}: ambiguous commit (reply cut after COMMIT)",
        "cut -> outcome resolved by token (worst)",
        latency, "(6 of 6 resolved as applied, none applied twice)",
    )  # fmt: skip
    print(f"ambiguous commits: {report}")


def test_many_watchers_on_few_partitions_retry_deadlocks_whole_and_lose_nothing(
    scenario: Scenario, database: str, own_server: OwnServer, recovery: RecoveryLog
) -> None:
    """Eight watchers on two partitions, three producers writing into them all along.

    On a server of the suite's own, so that its deadlock count is this run's.
    """
    url = own_server.app_url
    handler = scenario.handler(last_gate=3, delay=0.0)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=2, items=30, last_gate=3)
    fleet = scenario.fleet(url, feed, handler, (*WATCHER_ARGS, "--batch-size", "3"))
    deadlocks_before = own_server.deadlocks()
    fleet.start(
        8, env={"FEEDWATCH_LOG_LEVEL": "DEBUG"}, args=["--concurrency", "32", "--commit-interval", "0.001"]
    )
    pids = {w.name: w.pid for w in fleet.watchers}
    started = time.monotonic()
    errors: list[BaseException] = []
    lock = threading.Lock()

    def producer(k: int) -> None:
        for r in range(20):
            part = f"p{(r + k) % 2}"
            try:
                gate = feed.partition(part).gate
                items = {f"x{k}-{r:03d}-{j}": {"last_gate": 3} for j in range(3)}
                feed.enqueue(part, items, gate=gate)
            except GateError:
                continue  # the partition moved on between our read and our write: refused
            except Exception as error:
                errors.append(error)
                return
            with lock:
                for item in items:
                    expected.add(part, item, 3, gate)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, f"a producer failed: {errors}"
    wait_drained(store, feed.name, 180)
    drained = time.monotonic() - started
    same_processes(fleet, pids)
    fleet.stop_and_check()  # no error escaped: every watcher exits 0 with no error logged
    deadlocks = own_server.deadlocks() - deadlocks_before
    retried = sum(
        1 for w in fleet.watchers for e in w.entries() if e["message"].startswith("transaction retried")
    )  # fmt: skip
    report = verify(store, feed.name, expected, handler.calls(feed.name), allow_reopen=True)
    recovery.record(
        f"11. {database}: deadlock storm (8 watchers, 2 partitions, 3 producers)", "drain", drained,
        f"({deadlocks} deadlocks, {retried} transactions retried whole, 0 errors escaped)",
    )  # fmt: skip
    print(f"deadlock storm: {report}")
