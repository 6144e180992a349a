"""Scenario 4: one of two watchers dies (SIGKILL) or is stopped (SIGTERM) mid-run.

The workload keeps both watchers busy (a processor that sleeps a little per
item). Once both hold partitions and have made progress, one gets the signal.
The partitions it held at that moment are read from the database (``owner``);
recovery of each is the first ``dispatched`` history event by another owner
after the signal. Figures: seconds until the first of them and until the last
of them made progress again (median over partitions too).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import func, select

from bench.figures import percentile
from bench.harness import (
    Database,
    WatcherConfig,
    start_watchers,
    utc_from_epoch,
    wait_for_heartbeats,
)
from feedwatch.testing import wait_for


@dataclass
class Failover:
    signal: str
    held: int
    first: float
    median: float
    last: float
    drained: float | None = None  # SIGTERM: signal -> the process exited
    notes: list[str] = field(default_factory=list)


def _dispatched_after(
    db: Database, feed: str, pks: list[int], owner_prefix: str, since: datetime
) -> dict[int, datetime]:
    h = db.store.tables.history
    query = (
        select(h.c.partition_pk, func.min(h.c.at))
        .where(
            h.c.feed == feed,
            h.c.event == "dispatched",
            h.c.at >= since,
            h.c.partition_pk.in_(pks),
            ~h.c.owner.like(owner_prefix + "%"),
        )
        .group_by(h.c.partition_pk)
    )
    with db.store.engine.connect() as conn:
        return {r[0]: r[1] for r in conn.execute(query)}


def run(
    db: Database,
    workdir: Path,
    config: WatcherConfig,
    *,
    sig: int,
    partitions: int,
    items: int,
    delay: float,
    settle: float,
) -> Failover:
    """Kill or stop one of two watchers ``settle`` seconds after work began."""
    feed = db.new_feed("failover", history=True)
    procs = start_watchers(
        db,
        feed.name,
        2,
        config,
        workdir,
        processor="bench.processors:sleepy",
        env={"BENCH_DELAY": str(delay), "BENCH_GATES": "2"},
    )
    try:
        wait_for_heartbeats(db, feed.name, 2, procs)
        payload = [(f"i{j}", {"n": j}) for j in range(items)]
        for k in range(partitions):
            feed.enqueue(f"p{k}", payload)
        victim = procs.procs[1]
        victim_owner = next(o for o in db.store.live_watchers(feed.name, db.now()) if f"-{victim.pid}-" in o)

        def both_hold() -> bool:
            procs.check_alive()
            owners = [o for o in db.owners(feed.name).values() if o]
            return victim_owner in owners and any(o != victim_owner for o in owners)

        wait_for(both_hold, timeout=60, message="both watchers holding partitions")
        time.sleep(settle)
        at = utc_from_epoch(time.time())
        started = time.monotonic()
        victim.send_signal(sig)
        drained = None
        if sig == signal.SIGTERM:
            victim.wait(60)
            drained = time.monotonic() - started
        else:
            victim.wait(10)
        # Partitions the victim held (and did not finish) at the signal.
        held = (
            [pk for pk, o in db.owners(feed.name).items() if o == victim_owner]
            if sig == signal.SIGKILL
            else None
        )
        if held is None:
            h = db.store.tables.history
            with db.store.engine.connect() as conn:
                held = [
                    r[0]
                    for r in conn.execute(
                        select(h.c.partition_pk).where(
                            h.c.feed == feed.name,
                            h.c.event == "lease_released",
                            h.c.owner == victim_owner,
                            h.c.at >= at,
                        )
                    )
                ]
        notes = []
        if not held:
            notes.append("the victim held no unfinished partition at the signal")
            return Failover(
                signal.Signals(sig).name, 0, float("nan"), float("nan"), float("nan"), drained, notes
            )
        deadline = time.monotonic() + config_lease(config) * 3 + 60

        recovered: dict[int, datetime] = {}

        def all_recovered() -> bool:
            nonlocal recovered
            recovered = _dispatched_after(db, feed.name, held, victim_owner, at)
            counts = db.counts(feed.name)
            return len(recovered) == len(held) or counts.get("complete", 0) == partitions

        while not all_recovered():
            procs.procs[0].poll()
            if procs.procs[0].returncode is not None:
                raise RuntimeError("the surviving watcher exited")
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if len(recovered) < len(held):
            notes.append(f"{len(held) - len(recovered)} of {len(held)} partitions never resumed")
        delays = sorted((t - at).total_seconds() for t in recovered.values())
        return Failover(
            signal.Signals(sig).name,
            len(held),
            delays[0] if delays else float("nan"),
            percentile(delays, 0.5),
            delays[-1] if delays else float("nan"),
            drained,
            notes,
        )
    finally:
        procs.stop()
        db.drop_feed(feed.name)


def config_lease(config: WatcherConfig) -> float:
    return config.lease_duration or 30.0
