"""SQLite with several watcher processes on one file, one of them SIGKILLed while they write."""

from __future__ import annotations

import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from feedwatch import migrate
from tests.support.fault_checks import Expected, verify
from tests.support.faults import (
    WATCHER_ARGS,
    RecoveryLog,
    Scenario,
    busy_watcher,
    enqueue_workload,
    held_by,
    wait_drained,
    wait_taken_over,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]


def test_sqlite_watcher_sigkilled_during_writes_leaves_an_intact_file_and_loses_nothing(
    scenario: Scenario, tmp_path: Path, recovery: RecoveryLog
) -> None:
    path = tmp_path / "feed.db"
    url = f"sqlite:///{path}"
    migrate(url)
    rng = random.Random(11)
    handler = scenario.handler(last_gate=1, delay=0.03)
    feed = scenario.feed(url)
    store = feed.store
    expected = Expected()
    enqueue_workload(feed, expected, partitions=6, items=80, last_gate=1)
    # Small batches: the watchers write all the time, so a kill lands during writes.
    fleet = scenario.fleet(url, feed, handler, (*WATCHER_ARGS, "--batch-size", "4"))
    fleet.start(3)
    for _ in range(2):
        time.sleep(rng.uniform(0.3, 1.0))
        victim = busy_watcher(store, feed.name, fleet, handler, rng=rng)
        held = held_by(store, feed.name, victim)
        victim.signal(signal.SIGKILL)
        killed = time.monotonic()
        fleet.start(1)
        wait_taken_over(store, feed.name, victim, held)
        recovery.record("10. SQLite, SIGKILL during writes", "kill -> its partitions leased again",
                        time.monotonic() - killed)  # fmt: skip
    wait_drained(store, feed.name, 120)
    fleet.stop_and_check()
    store.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    verify(scenario.store(url), feed.name, expected, handler.calls(feed.name))
