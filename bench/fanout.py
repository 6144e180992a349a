"""Scenario 1 (and the engine half of 2 and 5): fan-out/fan-in through real watchers.

One run: start the watchers on a fresh feed and wait until all have
heartbeated (so they share the partitions from the start); enqueue every
partition with ``not_before = T0``, a moment after the enqueue will have
finished, so the work becomes due at once for every watcher; wait until every
partition is complete. Figures:

- throughput: item-gates (processor calls) per second, from the first
  processor call (each watcher marks its first call) to the last partition's
  completion (``partitions.updated_at``, written by the engine);
- enqueue rate of the producer API over the ``Feed.enqueue`` calls;
- fan-in latency per partition (history on): the last result event of gate 0
  (``event = 'gate'``: the item moved to gate 1) to the first ``dispatched``
  event at gate 1;
- CPU seconds of every process over the run, peak RSS of each watcher.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.figures import percentile
from bench.harness import (
    CpuMeter,
    Database,
    RssSampler,
    WatcherConfig,
    start_watchers,
    wait_for_heartbeats,
)


@dataclass(frozen=True)
class Workload:
    partitions: int
    items: int
    gates: int = 2

    @property
    def item_gates(self) -> int:
        return self.partitions * self.items * self.gates

    def __str__(self) -> str:
        return f"{self.partitions} partitions x {self.items} items x {self.gates} gates"


@dataclass
class Run:
    """What one run measured."""

    item_gates: int
    wall: float
    enqueue_items_per_s: float
    fanin: list[float] = field(default_factory=list)
    # The fan-in split at the gate_advanced event: last result -> decision, decision -> next claim.
    fanin_decide: list[float] = field(default_factory=list)
    fanin_claim: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    rss_peak_mb: list[float] = field(default_factory=list)
    wall_history: float | None = None
    notes: list[str] = field(default_factory=list)
    profile: Path | None = None
    counts: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.item_gates / self.wall if self.wall > 0 else float("nan")

    @property
    def fanin_median(self) -> float:
        return percentile(self.fanin, 0.5)

    @property
    def fanin_p99(self) -> float:
        return percentile(self.fanin, 0.99)


#: Seconds without any item result committed before a run is declared stuck.
STALL = 30.0


class StuckError(RuntimeError):
    """The watchers stopped making progress (an engine bug, not a slow run)."""


# Items/s the producer managed last time, per database: sizes the lead before T0.
_enqueue_rate: dict[str, float] = {}


def run(
    db: Database,
    workdir: Path,
    workload: Workload,
    config: WatcherConfig,
    *,
    history: bool,
    watchers: int = 2,
    processor: str = "bench.processors:noop",
    handler: str | None = None,
    env: dict[str, str] | None = None,
    extra_cpu: dict[str, list[Any]] | None = None,
    profile: Path | None = None,
    feed_settings: dict[str, Any] | None = None,
    timeout: float = 900,
    counts: bool = False,
    prepare: Callable[[str], None] | None = None,
) -> Run:
    """One run; ``prepare(feed_name)`` runs before the watchers start (e.g. to add idle partitions)."""
    feed = db.new_feed("fan", history=history, **(feed_settings or {}))
    if prepare is not None:
        prepare(feed.name)
    procs = start_watchers(
        db,
        feed.name,
        watchers,
        config,
        workdir,
        processor=processor,
        handler=handler,
        env={"BENCH_GATES": str(workload.gates), **(env or {})},
        counts=counts,
    )
    spy: subprocess.Popen[bytes] | None = None
    try:
        wait_for_heartbeats(db, feed.name, watchers, procs)
        expected = workload.partitions * workload.items / _enqueue_rate.get(db.name, 2000.0)
        lead = max(1.0, expected * 1.5 + 0.5)
        t0 = db.now() + timedelta(seconds=lead)
        payload = [(f"i{j}", {"n": j}) for j in range(workload.items)]
        started = time.perf_counter()
        for k in range(workload.partitions):
            feed.enqueue(f"p{k}", payload, not_before=t0)
        elapsed = time.perf_counter() - started
        enqueued = workload.partitions * workload.items
        _enqueue_rate[db.name] = enqueued / elapsed
        notes = []
        late = (db.now() - t0).total_seconds()
        if late > 0:
            notes.append(f"enqueue overran the start by {late:.2f} s")
        else:
            time.sleep(-late)
        if profile is not None:
            spy = subprocess.Popen(
                [
                    "py-spy",
                    "record",
                    "--pid",
                    str(procs.procs[0].pid),
                    "--rate",
                    "250",
                    "--format",
                    "raw",
                    "--threads",
                    "--output",
                    str(profile),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
            )
        cpu = CpuMeter({"watchers": procs.ps, **(extra_cpu or {})}, db)
        cpu.start()
        with RssSampler(procs.ps) as rss:
            deadline = time.monotonic() + timeout
            progress, progressed_at, checked_at = -1, time.monotonic(), 0.0
            while True:
                procs.check_alive()
                status = db.counts(feed.name)
                if status.get("failed"):
                    raise RuntimeError(f"{status['failed']} partition(s) failed in {feed.name}")
                if status.get("complete", 0) >= workload.partitions:
                    break
                now = time.monotonic()
                if now > deadline:
                    raise TimeoutError(f"not complete after {timeout} s: {status}\n{stalled(db, feed.name)}")
                if now - checked_at > 2:
                    checked_at = now
                    done = db.items_done(feed.name)
                    if done != progress:
                        progress, progressed_at = done, now
                    elif now - progressed_at > STALL:
                        raise StuckError(
                            f"no item finished for {STALL:.0f} s ({status}): the engine is stuck\n"
                            + stalled(db, feed.name)
                        )
                time.sleep(0.05)
        cpu.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
            spy = None
        first = procs.first_call()  # in-process processors mark their first call
        if first is None and history:  # the HTTP processor: the first claim in the history
            dispatched = db.first_per_partition(feed.name, "dispatched")
            first = min(dispatched.values()) if dispatched else None
        last = db.last_complete(feed.name)
        if first is None or last is None:
            raise RuntimeError("cannot tell when the run started (no processor mark, history off)")
        wall = (last - first).total_seconds()
        result = Run(
            item_gates=workload.item_gates,
            wall=wall,
            enqueue_items_per_s=enqueued / elapsed,
            cpu=cpu.result(),
            rss_peak_mb=[v / 2**20 for v in rss.peak.values()],
            notes=notes,
            profile=profile,
        )
        if history:
            done_gate0 = db.last_per_partition(feed.name, "gate")
            next_dispatch = db.first_per_partition(feed.name, "dispatched", gate=1)
            result.fanin = [
                (next_dispatch[pk] - at).total_seconds()
                for pk, at in done_gate0.items()
                if pk in next_dispatch
            ]
            advanced = db.first_per_partition(feed.name, "gate_advanced", gate=1)
            for pk, at in done_gate0.items():
                if pk in advanced and pk in next_dispatch:
                    result.fanin_decide.append((advanced[pk] - at).total_seconds())
                    result.fanin_claim.append((next_dispatch[pk] - advanced[pk]).total_seconds())
            dispatched = db.first_per_partition(feed.name, "dispatched")
            completed = db.last_per_partition(feed.name, "partition_completed")
            if dispatched and completed:
                result.wall_history = (max(completed.values()) - min(dispatched.values())).total_seconds()
        procs.stop()
        if counts:
            result.counts = procs.counts()
        return result
    finally:
        if spy is not None:
            spy.kill()
        procs.stop()
        db.drop_feed(feed.name)


def stalled(db: Database, feed: str) -> str:
    """What the unfinished partitions look like, for the error message of a stuck run."""
    from sqlalchemy import func, select

    t = db.store.tables
    p, h = t.partitions, t.history
    with db.store.engine.connect() as conn:
        rows = conn.execute(
            select(p.c.id, p.c.status, p.c.gate, p.c.owner, p.c.steal_by, p.c.lease_epoch)
            .where(p.c.feed == feed, p.c.status != "complete")
            .limit(10)
        ).all()
        events = conn.execute(
            select(h.c.event, func.count()).where(h.c.feed == feed).group_by(h.c.event)
        ).all()
    lines = [f"  partition {r.id}: {r.status} at gate {r.gate}, owner {r.owner}, steal_by {r.steal_by}, "
             f"lease epoch {r.lease_epoch}" for r in rows]  # fmt: skip
    lines.append("  history events: " + ", ".join(f"{e} {n}" for e, n in events))
    return "\n".join(lines)
