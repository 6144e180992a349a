"""Scenario 5: what grows with the number of partitions, and what must not.

- lease cycle: the store calls one watcher's lease pass makes (heartbeat,
  count_balance (count_live_watchers and count_active before issue 18), acquire_leases,
  renew_leases), timed from the bench process against a feed with 100 due
  partitions plus N idle ones (half with nothing to do, ``ready_at`` NULL; half
  waiting for a retry, ``ready_at`` a day ahead). The cycle must not cost
  more with N = 100,000 than with N = 1,000.
- memory: peak RSS of each watcher while it works the scenario 1 workload on
  a feed that also holds the N waiting partitions; and while 100,000
  one-item partitions are all due at once (a backlog).
"""

from __future__ import annotations

import statistics
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.harness import (
    Database,
    RssSampler,
    WatcherConfig,
    bulk_partitions,
    start_watchers,
    utc_from_epoch,
    wait_for_heartbeats,
)


@dataclass
class LeaseCycle:
    idle: int
    total_ms: float
    spread_ms: tuple[float, float]
    parts_ms: dict[str, float] = field(default_factory=dict)


def cycle_feed(db: Database, idle: int, due: int = 100) -> str:
    """A feed with ``due`` partitions due now and ``idle`` waiting ones (half idle, half later)."""
    feed = db.new_feed("cycle", history=False).name
    bulk_partitions(db, feed, due, ready_at=db.now() - timedelta(seconds=1), prefix="due")
    add_idle(db, feed, idle)
    return feed


def lease_cycle(db: Database, feed: str, idle: int, *, cycles: int = 15) -> LeaseCycle:
    """Median time of one watcher's lease pass on ``feed`` (see :func:`cycle_feed`)."""
    store = db.store
    owner = f"bench-{uuid.uuid4().hex[:8]}"
    totals: list[float] = []
    parts: dict[str, list[float]] = {}
    steps: list[tuple[str, Any]] = [
        (
            "heartbeat",
            lambda now: store.heartbeat(feed, owner, "bench", now=now, expires=now + timedelta(seconds=30)),
        ),
    ]
    if hasattr(store, "count_balance"):  # one read since issue 18; two before (--engine-rev)
        steps.append(("count_balance", lambda now: store.count_balance(feed, now, cap=2000)))
    else:
        older: Any = store  # an engine of before issue 18 (--engine-rev)
        if hasattr(older, "count_live_watchers"):
            steps.append(("count_live_watchers", lambda now: older.count_live_watchers(feed, now)))
        steps.append(("count_active", lambda now: older.count_active(feed, now, cap=2000)))
    steps += [
        (
            "acquire_leases",
            lambda now: store.acquire_leases(
                feed, owner, now=now, until=now + timedelta(seconds=30), limit=50, history=False
            ),
        ),
        ("renew_leases", lambda now: store.renew_leases(feed, owner, until=now + timedelta(seconds=30))),
    ]
    for _ in range(cycles + 2):
        total = 0.0
        for name, step in steps:
            now = db.now()
            started = time.perf_counter()
            step(now)
            spent = time.perf_counter() - started
            parts.setdefault(name, []).append(spent)
            total += spent
        totals.append(total)
        held = [r.pk for r in store.renew_leases(feed, owner, until=db.now() + timedelta(seconds=30))]
        store.release_leases(feed, owner, held, now=db.now(), history=False)
    totals, parts = totals[2:], {k: v[2:] for k, v in parts.items()}  # warm-up left out
    store.remove_heartbeat(feed, owner)
    return LeaseCycle(
        idle,
        statistics.median(totals) * 1000,
        (min(totals) * 1000, max(totals) * 1000),
        {k: statistics.median(v) * 1000 for k, v in parts.items()},
    )


def add_idle(db: Database, feed: str, idle: int) -> None:
    bulk_partitions(db, feed, idle // 2, ready_at=None, prefix="idle")
    bulk_partitions(db, feed, idle - idle // 2, ready_at=db.now() + timedelta(days=1), prefix="later")


@dataclass
class Backlog:
    partitions: int
    seconds: float
    completed: int
    rss_peak_mb: list[float]
    leases_held: int

    @property
    def partitions_per_s(self) -> float:
        return self.completed / self.seconds


def backlog_memory(
    db: Database, workdir: Path, config: WatcherConfig, partitions: int, seconds: float
) -> Backlog:
    """Peak RSS of 2 watchers for ``seconds`` with ``partitions`` one-item partitions all due.

    Also how many partitions they completed per second (from their first call):
    every partition costs a lease, a claim, a commit and a checkpoint.
    """
    f = db.new_feed("backlog", history=False)
    procs = start_watchers(db, f.name, 2, config, workdir, env={"BENCH_GATES": "1"})
    try:
        wait_for_heartbeats(db, f.name, 2, procs)
        bulk_partitions(db, f.name, partitions, ready_at=db.now(), items=1, prefix="b")
        with RssSampler(procs.ps) as rss:
            time.sleep(seconds)
            procs.check_alive()
            completed = db.counts(f.name).get("complete", 0)
            end = utc_from_epoch(time.time())
        owners = db.owners(f.name)
        held = sum(1 for o in owners.values() if o)
        first = procs.first_call()
        elapsed = (end - first).total_seconds() if first else seconds
        return Backlog(partitions, elapsed, completed, [v / 2**20 for v in rss.peak.values()], held)
    finally:
        procs.stop()
        db.drop_feed(f.name)
