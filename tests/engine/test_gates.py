"""Fan-out / fan-in through gates, on every database."""

from __future__ import annotations

import itertools
import random
import threading
from collections import defaultdict

import pytest

from feedwatch import Feed, GateError, Item, Result, Store
from feedwatch.testing import RecordingProcessor, WatcherRunner, wait_for
from tests.engine.helpers import FAST, all_closed, statuses

pytestmark = pytest.mark.engine


class OrderedGates:
    """Moves each item 0 -> 1 -> 2 -> done and records the order of starts and ends."""

    def __init__(self, last_gate: int = 2) -> None:
        self.seq = itertools.count()
        self.events: list[tuple[str, str, str, int, int]] = []
        self.last_gate = last_gate
        self.lock = threading.Lock()

    async def process(self, item: Item) -> Result:
        with self.lock:
            self.events.append(("start", item.partition, item.id, item.gate, next(self.seq)))
        result = (
            Result.complete({"gate": item.gate})
            if item.gate >= self.last_gate
            else Result.wait_at(item.gate + 1, {"gate": item.gate})
        )
        with self.lock:
            self.events.append(("end", item.partition, item.id, item.gate, next(self.seq)))
        return result


def test_each_item_sees_gate_g_only_after_its_partition_finished_gate_g_minus_1(
    feed: Feed, store: Store
) -> None:
    for p in range(20):
        feed.enqueue(f"job{p}", {f"r{i}": {"n": i} for i in range(50)})
    processor = OrderedGates(last_gate=2)
    with WatcherRunner(store, feed.name, processor, FAST):
        wait_for(lambda: all_closed(feed), timeout=120, message="all partitions closed")
    assert set(statuses(feed).values()) == {"complete"}
    starts: dict[tuple[str, int], int] = defaultdict(lambda: 10**12)
    ends: dict[tuple[str, int], int] = defaultdict(int)
    calls = 0
    for kind, part, _item, gate, seq in processor.events:
        if kind == "start":
            calls += 1
            starts[(part, gate)] = min(starts[(part, gate)], seq)
        else:
            ends[(part, gate)] = max(ends[(part, gate)], seq)
    assert calls == 20 * 50 * 3, "every item called once per gate"
    for p in range(20):
        for gate in (1, 2):
            assert starts[(f"job{p}", gate)] > ends[(f"job{p}", gate - 1)], (
                f"job{p} gate {gate} started early"
            )
    results = feed.items("job0", limit=100)
    assert {r.data for r in results} == {b'{"gate":2}'}


def test_manual_checkpoint_waits_for_the_producer_to_move_the_gate(feed: Feed, store: Store) -> None:
    feed.update(manual_checkpoint=True)
    feed.enqueue("p", {"a": 1, "b": 2})
    feed.enqueue("p", {"c": 3}, gate=1)
    processor = RecordingProcessor()
    with WatcherRunner(store, feed.name, processor, FAST):
        wait_for(lambda: len(processor.calls) == 2 and feed.partition("p").owner is None, timeout=30)
        assert feed.partition("p").gate == 0, "the gate did not advance by itself"
        feed.set_gate("p", 1)
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
    assert [(c.item, c.gate) for c in processor.calls][-1] == ("c", 1)


def test_without_auto_close_an_idle_partition_is_released_and_woken_by_new_items(
    feed: Feed, store: Store
) -> None:
    feed.update(auto_close=False)
    feed.enqueue("stream", {"a": 1})
    processor = RecordingProcessor()
    with WatcherRunner(store, feed.name, processor, FAST):
        wait_for(lambda: len(processor.calls) == 1, timeout=30)
        wait_for(
            lambda: feed.partition("stream").owner is None, timeout=30, message="idle partition released"
        )
        part = feed.partition("stream")
        assert (part.status, part.ready_at) == ("available", None)
        feed.enqueue("stream", {"b": 2})
        wait_for(lambda: len(processor.calls) == 2, timeout=30, message="new item woke the partition")
    assert feed.partition("stream").status == "available"


def test_a_complete_partition_reopens_when_items_are_added(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1})
    with WatcherRunner(store, feed.name, RecordingProcessor(), FAST):
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
        assert feed.enqueue("p", {"b": 2}).reopened
        wait_for(
            lambda: feed.partition("p").status == "complete" and len(feed.items("p", status="complete")) == 2,
            timeout=30,
        )


def test_items_added_at_later_gates_while_watchers_advance_are_never_stranded(
    feed: Feed, store: Store
) -> None:
    """Producers race the checkpoint: items land at the current gate and above while gates advance."""
    rng = random.Random(42)
    processor = OrderedGates(last_gate=4)
    parts = [f"p{n}" for n in range(4)]
    for p in parts:
        feed.enqueue(p, {"seed": 0})
    with WatcherRunner(store, feed.name, processor, FAST):
        for round_ in range(40):
            p = rng.choice(parts)
            gate = feed.partition(p).gate + rng.randint(0, 2)
            try:
                feed.enqueue(p, {f"r{round_}-{k}": k for k in range(rng.randint(1, 5))}, gate=min(gate, 4))
            except GateError:  # the gate moved between the read and the enqueue: refused whole
                continue
        wait_for(lambda: all_closed(feed), timeout=120, message="all partitions closed")
    assert set(statuses(feed).values()) == {"complete"}
    for p in parts:
        assert feed.items(p, status="available") == [], f"{p} has stranded items"
