"""Several watcher processes on one database: balance, steals, crashes."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from feedwatch import Feed, Store
from feedwatch.testing import wait_for
from tests.support.processes import start_watcher, stop

pytestmark = [pytest.mark.engine, pytest.mark.slow]


def calls(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loads(store: Store, feed: str) -> dict[str, int]:
    p = store.tables.partitions
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(p.c.owner, func.count())
            .where(p.c.feed == feed, p.c.owner.is_not(None), p.c.status == "available")
            .group_by(p.c.owner)
        ).all()
    return {o: int(n) for o, n in rows}


def completions(store: Store, feed: str) -> Counter[int]:
    h = store.tables.history
    with store.engine.connect() as conn:
        rows = conn.execute(select(h.c.item_pk).where(h.c.feed == feed, h.c.event == "complete")).all()
    return Counter(r[0] for r in rows)


def balanced(store: Store, feed: str, watchers: int, partitions: int) -> bool:
    now = loads(store, feed)
    target = -(-partitions // watchers)
    return (
        len(now) == watchers
        and sum(now.values()) == partitions
        and all(target - 1 <= n <= target for n in now.values())
    )


def test_watchers_share_partitions_and_a_late_joiner_gets_its_share_by_hand_off(
    db_url: str, store: Store, feed: Feed, tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    for p in range(12):
        feed.enqueue(f"p{p:02}", {f"i{i:03}": i for i in range(80)})
    env = {"FEEDWATCH_TEST_RECORD": str(record), "FEEDWATCH_TEST_DELAY": "0.4"}
    args = ["--concurrency", "6", "--lease-duration", "2"]
    procs = [start_watcher(db_url, feed.name, processor="tests.support.processors:slow", env=env, args=args,
                           log=tmp_path / f"w{n}.log") for n in range(2)]  # fmt: skip
    try:
        wait_for(lambda: balanced(store, feed.name, 2, 12), timeout=60, message="2 watchers balanced")
        procs += [start_watcher(db_url, feed.name, processor="tests.support.processors:slow", env=env,
                                args=args, log=tmp_path / f"w{n}.log") for n in range(2, 4)]  # fmt: skip
        wait_for(lambda: balanced(store, feed.name, 4, 12), timeout=90, message="4 watchers balanced")
        print("loads after the late joiners:", loads(store, feed.name))
        h = store.tables.history
        with store.engine.connect() as conn:
            handoffs = conn.execute(
                select(func.count()).where(h.c.feed == feed.name, h.c.event == "lease_handed_off")
            ).scalar()
            taken = conn.execute(
                select(func.count()).where(h.c.feed == feed.name, h.c.event == "lease_taken")
            ).scalar()
        assert handoffs and handoffs >= 4, "the late joiners got partitions by hand-off"
        assert taken == 0, "no lease expired: balancing never waits for expiry"
    finally:
        for proc in procs:
            assert stop(proc) == 0
    made = calls(record)
    per_item = Counter((c["p"], c["i"], c["a"]) for c in made)
    assert per_item and max(per_item.values()) == 1, "no handler call was duplicated by balancing"
    attempts = Counter((c["p"], c["i"]) for c in made)
    assert max(attempts.values()) == 1, "no item was dispatched twice"


def test_a_sigkilled_watchers_partitions_are_taken_over_and_every_item_completes_once(
    db_url: str, store: Store, feed: Feed, tmp_path: Path
) -> None:
    record = tmp_path / "calls.jsonl"
    for p in range(6):
        feed.enqueue(f"p{p}", {f"i{i:02}": i for i in range(40)})
    env = {
        "FEEDWATCH_TEST_RECORD": str(record),
        "FEEDWATCH_TEST_DELAY": "0.05",
        "FEEDWATCH_TEST_LAST_GATE": "1",
    }
    procs = [start_watcher(db_url, feed.name, processor="tests.support.processors:gates", env=env,
                           args=["--concurrency", "8"], log=tmp_path / f"w{n}.log")
             for n in range(2)]  # fmt: skip
    try:
        wait_for(lambda: len(loads(store, feed.name)) == 2, timeout=60, message="both watchers hold leases")
        wait_for(lambda: len(calls(record)) > 60, timeout=60)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait(10)
        killed_at = time.monotonic()
        wait_for(lambda: all(p.status == "complete" for p in feed.partitions()), timeout=120)
        print(f"all complete {time.monotonic() - killed_at:.1f} s after the SIGKILL")
    finally:
        for proc in procs[1:]:
            stop(proc)
    done = completions(store, feed.name)
    assert len(done) == 240 and set(done.values()) == {1}, "every item completed exactly once"


def test_a_poison_item_that_kills_its_watcher_fails_after_its_attempts_and_the_rest_completes(
    db_url: str, store: Store, feed: Feed, tmp_path: Path
) -> None:
    feed.update(max_unanswered=3)
    record = tmp_path / "calls.jsonl"
    feed.enqueue(
        "p0", {**{f"i{i:02}": i for i in range(20)}, "poison": 0, **{f"j{i:02}": i for i in range(20)}}
    )
    feed.enqueue("p1", {f"k{i:02}": i for i in range(20)})
    env = {"FEEDWATCH_TEST_RECORD": str(record), "FEEDWATCH_TEST_DELAY": "0.02"}
    deaths = 0
    procs = [start_watcher(db_url, feed.name, processor="tests.support.processors:suicidal", env=env,
                           log=tmp_path / "w.log") for _ in range(2)]  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not all(p.status in ("complete", "failed") for p in feed.partitions()):
            assert time.monotonic() < deadline, "the feed did not settle"
            for n, proc in enumerate(procs):
                if proc.poll() is not None:  # a supervisor (Kubernetes) restarts dead watchers
                    assert proc.returncode == 17
                    deaths += 1
                    procs[n] = start_watcher(db_url, feed.name, processor="tests.support.processors:suicidal",
                                             env=env, log=tmp_path / "w.log")  # fmt: skip
            time.sleep(0.1)
    finally:
        for proc in procs:
            stop(proc)
    items = {r.id: r for r in feed.items("p0", limit=100)}
    assert items["poison"].status == "failed"
    assert "without an answer" in (items["poison"].error or "")
    assert deaths == 3
    assert all(r.status == "complete" for k, r in items.items() if k != "poison")
    assert all(r.status == "complete" for r in feed.items("p1", limit=100))
    assert feed.partition("p0").status == "failed" and feed.partition("p1").status == "complete"


def test_producers_enqueueing_into_busy_partitions_cause_no_lease_changes(
    db_url: str, store: Store, feed: Feed, tmp_path: Path
) -> None:
    for p in range(4):  # a backlog keeps every partition busy for the whole test
        feed.enqueue(f"p{p}", {f"seed{i}": i for i in range(60)})
    env = {"FEEDWATCH_TEST_DELAY": "0.3"}
    proc = start_watcher(db_url, feed.name, processor="tests.support.processors:slow", env=env,
                         args=["--lease-duration", "3", "--concurrency", "4"],
                         log=tmp_path / "w.log")  # fmt: skip
    try:
        wait_for(lambda: sum(loads(store, feed.name).values()) == 4, timeout=60)
        h = store.tables.history
        with store.engine.connect() as conn:
            before = conn.execute(
                select(func.count()).where(h.c.feed == feed.name, h.c.event.like("lease%"))
            ).scalar()
        end = time.monotonic() + 6
        n = 0
        while time.monotonic() < end:
            feed.enqueue(f"p{n % 4}", {f"x{n}": n})
            n += 1
        with store.engine.connect() as conn:
            events = conn.execute(
                select(h.c.event, h.c.message).where(h.c.feed == feed.name, h.c.event.like("lease%"))
            ).all()
        print(f"{n} enqueues during the run")
        assert n > 50
        assert events[before:] == [], f"leases changed while producers wrote: {events[before:]}"
        assert sum(loads(store, feed.name).values()) == 4
    finally:
        assert stop(proc) == 0
