"""Producers enqueueing while watchers checkpoint the same partitions.

A seeded random loop (``FEEDWATCH_FAULTS_SEED`` changes the seed; the seed is
printed): each round picks a partition, reads its gate and enqueues a few
items at that gate or a later one (sometimes at "the current gate" without
naming it), while fast watchers advance gates and close partitions. The race
to watch: an enqueue that lands between a watcher's look at the items and its
checkpoint write. The checkpoint is fenced by the partition's version, so the
watcher re-evaluates; an item must never be stranded below the gate or in a
partition closed over it.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from feedwatch import Feed, GateError, PartitionNotFoundError, migrate
from tests.conftest import database_url
from tests.faults.conftest import SERVERS
from tests.support.fault_checks import Expected, verify
from tests.support.faults import RecoveryLog, Scenario, wait_drained

pytestmark = [pytest.mark.faults, pytest.mark.slow]

SEED = int(os.environ.get("FEEDWATCH_FAULTS_SEED", "7"))


def produce(feed: Feed, expected: Expected, rng: random.Random, rounds: int) -> dict[tuple[str, str], float]:
    """Enqueue in ``rounds`` rounds; return when each item was enqueued (wall clock)."""
    enqueued: dict[tuple[str, str], float] = {}
    refused = 0
    for r in range(rounds):
        part = f"p{rng.randrange(4)}"
        try:
            current = feed.partition(part).gate
        except PartitionNotFoundError:  # not created yet
            current = 0
        named = rng.random() < 0.8
        gate = current + rng.choice([0, 0, 1, 2]) if named else None
        ids = [f"r{r:03d}-{k}" for k in range(rng.randint(1, 3))]
        walks = [rng.choice([0, 0, 1]) for _ in ids]
        data = {
            i: ({"last_gate": (gate or 0) + w} if named else {"n": r})
            for i, w in zip(ids, walks, strict=True)
        }
        try:
            result = feed.enqueue(part, data, gate=gate)
        except GateError:
            refused += 1  # the partition moved past the gate we read: a producer's race, refused
            continue
        now = time.time()
        for i, w in zip(ids, walks, strict=True):
            expected.add(part, i, result.gate + (w if named else 0), result.gate)
            enqueued[(part, i)] = now
        time.sleep(rng.uniform(0, 0.03))
    print(f"{rounds} rounds, {len(enqueued)} items, {refused} enqueues refused below the gate")
    return enqueued


@pytest.mark.parametrize("database", [*SERVERS, "sqlite"])
def test_items_enqueued_at_later_gates_while_watchers_checkpoint_are_never_stranded(
    scenario: Scenario, database: str, sqlite_url: str, tmp_path: Path, recovery: RecoveryLog
) -> None:
    if database == "sqlite":
        url = f"sqlite:///{tmp_path / 'feed.db'}"
        migrate(url)
    else:
        url = database_url(database, sqlite_url)
    seed = SEED + {"mariadb": 0, "sqlite": 1, "postgresql": 2}[database]
    print(f"seed {seed}")
    rng = random.Random(seed)
    handler = scenario.handler(last_gate=0, delay=0.0)
    feed = scenario.feed(url)
    expected = Expected()
    fleet = scenario.fleet(url, feed, handler)
    fleet.start(3)
    enqueued = produce(feed, expected, rng, rounds=120)
    wait_drained(feed.store, feed.name, 120)
    fleet.stop_and_check()
    calls = handler.calls(feed.name)
    report = verify(feed.store, feed.name, expected, calls, allow_reopen=True)
    done: dict[tuple[str, str], float] = {}
    for c in calls:
        if c.outcome.startswith("done"):
            done.setdefault((c.partition, c.item), c.t)
    worst = max(done[k] - t for k, t in enqueued.items())
    recovery.record(
        f"7. producers vs checkpoints ({database})", "worst enqueue -> completing call", worst,
        f"(seed {seed}, {len(enqueued)} items)",
    )  # fmt: skip
    print(report)
