"""Fan-out/fan-in through `feedwatch watch` processes and a real HTTP handler."""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from feedwatch import Feed
from feedwatch.testing import assert_invariants, wait_for
from tests.service.helpers import history, log_text, start_watch, stop_all, store_for
from tests.support.handler import Handler

pytestmark = pytest.mark.service

PARTITIONS, ITEMS, LAST_GATE = 5, 6, 2


def test_fan_out_fan_in_passes_every_gate_only_after_the_whole_partition_finished_the_previous(
    db_url_sqlite_mariadb: str, handler: Handler, tmp_path: Path
) -> None:
    url = db_url_sqlite_mariadb
    store = store_for(url)
    name = f"fan{uuid.uuid4().hex[:10]}"
    feed = Feed.create(store, name, backoff_base=0.05, backoff_cap=0.2, poll_delay=0.05)
    logs = [tmp_path / f"watcher{n}.log" for n in range(2)]
    procs = [start_watch(url, name, log, handler=handler.url, args=["--max-partitions", "3"]) for log in logs]
    try:
        wait_for(
            lambda: len(store.live_watchers(name, store.now())) == 2,
            timeout=60,
            message="both watchers to heartbeat",
        )
        parts = [f"p{n}" for n in range(PARTITIONS)]
        for part in parts:
            feed.enqueue(
                part,
                {f"i{n}": {"behave": "gates", "last": LAST_GATE, "delay": 0.02} for n in range(ITEMS)},
            )
        wait_for(
            lambda: all(feed.partition(p).status == "complete" for p in parts),
            timeout=120,
            message="every partition to complete: "
            + "".join(f"\n--- {log.name}\n{log_text(log)[-3000:]}" for log in logs),
        )
        assert all(p.poll() is None for p in procs), "a watcher exited during the run"
    finally:
        codes = stop_all(*procs)
    assert codes == [0, 0], [log_text(log)[-2000:] for log in logs]

    calls, replies = handler.records("call"), handler.records("reply")
    assert {c["feed"] for c in calls} == {name}
    # Every item saw every gate, in order, and its data flowed from gate to gate.
    seen: dict[tuple[str, str], list[int]] = defaultdict(list)
    for c in calls:
        seen[(c["p"], c["i"])].append(c["g"])
    assert len(seen) == PARTITIONS * ITEMS
    for key, gates in seen.items():
        assert sorted(set(gates)) == list(range(LAST_GATE + 1)), (key, gates)
        assert gates == sorted(gates), f"{key} went back a gate: {gates}"
    for part in parts:
        for row in feed.items(part):
            assert (row.status, row.gate) == ("complete", LAST_GATE)
            assert json.loads(row.data or b"null")["seen"] == list(range(LAST_GATE + 1))
    # Fan-in, from the handler's side: gate g of a partition starts only after
    # the handler answered every call of that partition at gate g - 1.
    for part in parts:
        for gate in range(1, LAST_GATE + 1):
            finished = max(r["t"] for r in replies if r["p"] == part and r["g"] == gate - 1)
            started = min(c["t"] for c in calls if c["p"] == part and c["g"] == gate)
            assert started > finished, (
                f"{part}: gate {gate} started {finished - started:.3f} s before gate {gate - 1} finished"
            )
    # Both watcher processes did work (each may hold 3 of the 5 partitions at most).
    owners = {row.owner for row in history(store, name, event="complete")}
    duplicates = len(calls) - PARTITIONS * ITEMS * (LAST_GATE + 1)
    print(
        f"\n{url.split(':')[0]}: {len(calls)} handler calls ({duplicates} repeated), "
        f"completions by {len(owners)} watcher(s)"
    )
    assert len(owners) == 2, f"only {owners} completed items"
    assert_invariants(store, name)
