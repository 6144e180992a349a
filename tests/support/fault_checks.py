"""The fault suite's checker: the database and the handler's log, read after the run.

:func:`verify` asserts feedwatch's promise for one feed:

- the engine's own invariant checker (:func:`feedwatch.testing.check_invariants`)
  finds nothing;
- every enqueued item is there, complete at its last gate, or failed for the
  reason the test stated; nothing else exists;
- every partition is closed, and none is complete with an item not complete;
- with history on, exactly one committed ``complete`` per item; the committed
  result is the answer of a real handler call (its attempt is on the
  handler's log, and the data stored is that call's answer);
- gates are passed in order and once per partition: in the history, each
  gate is entered once, in increasing order, every dispatch and every result
  happens at the partition's gate of the moment; in the handler's log (which
  needs no clock: calls are numbered as they arrive), every item called at
  gate ``g`` was called there before any call of its partition at a later
  gate, and with history on the very call whose answer was committed was.

The pieces are plain functions over plain tuples, so the checker itself is
tested on broken inputs (``tests/faults/test_checker.py``).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.engine import Connection

from feedwatch import Store
from feedwatch.testing import check_invariants

T = TypeVar("T")
RESULT_EVENTS = ("complete", "gate", "poll", "retry", "delay", "fail")


@dataclass(frozen=True)
class Call:
    """One handler call, as the handler recorded it when it arrived."""

    n: int
    partition: str
    item: str
    gate: int
    attempt: int
    watcher: str | None
    outcome: str
    t: float


@dataclass(frozen=True)
class Event:
    """One history row, reduced to what the checks need."""

    pk: int
    partition: str
    item: str | None
    event: str
    from_version: int
    gate: int
    attempt: int | None
    owner: str | None


@dataclass
class Expected:
    """What a test enqueued: ``(partition, item) -> last gate``, and the items meant to fail."""

    items: dict[tuple[str, str], int] = field(default_factory=dict)
    first_gate: dict[tuple[str, str], int] = field(default_factory=dict)
    #: ``(partition, item) -> regular expression`` their error must match.
    failed: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, partition: str, item: str, last_gate: int, gate: int = 0) -> dict[str, int]:
        self.items[(partition, item)] = last_gate
        self.first_gate[(partition, item)] = gate
        return {"last_gate": last_gate}


@dataclass
class Report:
    items: int = 0
    calls: int = 0
    repeated_calls: int = 0
    completions: int = 0
    history_rows: int = 0

    def __str__(self) -> str:
        return (
            f"{self.items} items, {self.calls} handler calls ({self.repeated_calls} repeated), "
            f"{self.completions} committed completions, {self.history_rows} history rows"
        )


def read_calls(path: Path, feed: str | None = None) -> list[Call]:
    calls: list[Call] = []
    if not path.exists():
        return calls
    for line in path.read_text().splitlines():
        e = json.loads(line)
        if feed is None or e["feed"] == feed:
            calls.append(Call(e["n"], e["p"], e["i"], e["g"], e["a"], e["w"], e["outcome"], e["t"]))
    return sorted(calls, key=lambda c: c.n)


@dataclass
class State:
    """The feed as stored: partitions, items (with data and error), history."""

    partitions: dict[str, tuple[str, int]]
    items: dict[tuple[str, str], tuple[str, int, Any, str | None]]
    history: list[Event]


def read(store: Store, work: Callable[[Connection], T]) -> T:
    """A read in the store's own transaction wrapper (which reconnects a stale pooled connection)."""
    return store.transaction(work, readonly=True)


def read_state(store: Store, feed: str) -> State:
    return read(store, lambda conn: _read_state(conn, store, feed))


def _read_state(conn: Connection, store: Store, feed: str) -> State:
    t = store.tables
    parts = conn.execute(
        select(t.partitions.c.pk, t.partitions.c.id, t.partitions.c.status, t.partitions.c.gate).where(
            t.partitions.c.feed == feed
        )
    ).all()
    names = {r.pk: r.id for r in parts}
    rows = conn.execute(
        select(t.items.c.pk, t.items.c.partition_pk, t.items.c.id, t.items.c.status,
               t.items.c.gate, t.items.c.data, t.items.c.error)
        .where(t.items.c.partition_pk.in_(list(names) or [-1]))
    ).all()  # fmt: skip
    item_names = {r.pk: r.id for r in rows}
    history = conn.execute(
        select(t.history.c.pk, t.history.c.partition_pk, t.history.c.item_pk,
               t.history.c.event, t.history.c.from_version, t.history.c.gate,
               t.history.c.attempt, t.history.c.owner)
        .where(t.history.c.feed == feed)
        .order_by(t.history.c.pk)
    ).all()  # fmt: skip
    items = {}
    for r in rows:
        data = json.loads(r.data) if r.data else None
        items[(names[r.partition_pk], r.id)] = (r.status, r.gate, data, r.error)
    return State(
        partitions={r.id: (r.status, r.gate) for r in parts},
        items=items,
        history=[
            Event(
                h.pk,
                names.get(h.partition_pk, str(h.partition_pk)),
                None if h.item_pk is None else item_names.get(h.item_pk, str(h.item_pk)),
                h.event,
                h.from_version,
                h.gate,
                h.attempt,
                h.owner,
            )
            for h in history
        ],
    )


# -- the checks, each over plain values ---------------------------------------------------


def check_outcomes(state: State, expected: Expected, *, skip_policy: bool) -> list[str]:
    """Every enqueued item present and final as expected; partitions closed accordingly."""
    problems: list[str] = []
    missing = set(expected.items) - set(state.items)
    extra = set(state.items) - set(expected.items)
    problems += [f"item {p}/{i} was enqueued but is not in the database" for p, i in sorted(missing)]
    problems += [f"item {p}/{i} is in the database but was never enqueued" for p, i in sorted(extra)]
    for key, last in sorted(expected.items.items()):
        if key not in state.items:
            continue
        status, gate, _, error = state.items[key]
        name = "/".join(key)
        if key in expected.failed:
            if status != "failed":
                problems.append(f"item {name} should have failed ({expected.failed[key]}) but is {status}")
            elif not re.search(expected.failed[key], error or ""):
                problems.append(f"item {name} failed for another reason: {error!r}")
        elif status != "complete":
            problems.append(f"item {name} is {status} (error {error!r}), not complete")
        elif gate != last:
            problems.append(f"item {name} completed at gate {gate}, not at its last gate {last}")
    by_partition: dict[str, list[str]] = defaultdict(list)
    for (p, _), (status, *_rest) in state.items.items():
        by_partition[p].append(status)
    for p, (status, _) in sorted(state.partitions.items()):
        statuses = by_partition[p]
        closable = all(s == "complete" or (skip_policy and s == "failed") for s in statuses)
        if status == "complete" and not closable:
            problems.append(f"partition {p} is complete with items {sorted(set(statuses))}")
        if status == "available":
            problems.append(f"partition {p} is still open (items {sorted(set(statuses))})")
        if status == "failed" and (skip_policy or "failed" not in statuses):
            problems.append(f"partition {p} failed without a failed item that blocks it")
    return problems


def check_results_came_from_calls(state: State, calls: list[Call], expected: Expected) -> list[str]:
    """The data stored for each complete item is the answer of one real 'done' call of it."""
    problems: list[str] = []
    by_n = {c.n: c for c in calls}
    for key, (status, gate, data, _) in sorted(state.items.items()):
        if status != "complete" or key not in expected.items:
            continue
        by = data.get("by") if isinstance(data, dict) else None
        call = by_n.get(by) if isinstance(by, int) else None
        if call is None or (call.partition, call.item) != key:
            problems.append(f"item {'/'.join(key)} holds data {data!r} that no call of it answered")
        elif not call.outcome.startswith("done") or call.gate != gate:
            problems.append(f"item {'/'.join(key)} holds the answer of call {call.n} ({call.outcome})")
    return problems


def check_calls(calls: list[Call], expected: Expected) -> list[str]:
    """Each complete item was called at each of its gates; gate order from the log alone.

    For every partition and gate ``g``: each item called at ``g`` had its first
    call there before the partition's first call at any later gate. Repeated
    calls (at-least-once delivery) may come late; a first call may not.
    """
    problems: list[str] = []
    gates_called: dict[tuple[str, str], set[int]] = defaultdict(set)
    first: dict[tuple[str, str, int], int] = {}
    first_in_partition_after: dict[tuple[str, int], int] = {}
    for c in calls:
        gates_called[(c.partition, c.item)].add(c.gate)
        first.setdefault((c.partition, c.item, c.gate), c.n)
    for (p, _, g), n in first.items():
        first_in_partition_after[(p, g)] = min(first_in_partition_after.get((p, g), n), n)
    for key, last in expected.items.items():
        if key in expected.failed:
            continue
        want = set(range(expected.first_gate.get(key, 0), last + 1))
        if not want <= gates_called[key]:
            problems.append(
                f"item {'/'.join(key)} was never called at gate(s) {sorted(want - gates_called[key])}"
            )
    partition_gates: dict[str, list[int]] = defaultdict(list)
    for p, g in sorted(first_in_partition_after):
        partition_gates[p].append(g)
    for (p, item, g), n in sorted(first.items()):
        later = [first_in_partition_after[(p, h)] for h in partition_gates[p] if h > g]
        if later and n > min(later):
            problems.append(
                f"partition {p}: item {item} was first called at gate {g} (call {n}) after a call "
                f"at a later gate (call {min(later)}): gates out of order"
            )
    return problems


def check_gate_history(
    events: list[Event], calls: list[Call] | None = None, *, allow_reopen: bool = False
) -> list[str]:
    """Gates in order and once per partition, judged from the history (and the calls)."""
    problems: list[str] = []
    gate: dict[str, int] = {}
    entered: dict[str, set[int]] = defaultdict(set)
    dispatch_gate: dict[tuple[str, str, int], int] = {}
    closed: dict[str, int] = defaultdict(int)
    is_closed: dict[str, bool] = defaultdict(bool)
    first_call_after: dict[tuple[str, int], int] = {}
    call_of: dict[tuple[str, str, int, int], int] = {}
    for c in calls or []:
        call_of.setdefault((c.partition, c.item, c.gate, c.attempt), c.n)
        key = (c.partition, c.gate)
        first_call_after[key] = min(first_call_after.get(key, c.n), c.n)
    for e in events:
        p = e.partition
        if e.item is None:
            if e.event == "enqueued":
                gate.setdefault(p, e.gate)
                if is_closed[p] and not allow_reopen:
                    problems.append(f"partition {p} got items after it completed")
                is_closed[p] = False
            elif e.event == "gate_advanced":
                now = gate.get(p, 0)
                if e.gate <= now:
                    problems.append(f"partition {p}: gate went from {now} to {e.gate}")
                if e.gate in entered[p]:
                    problems.append(f"partition {p} entered gate {e.gate} twice")
                entered[p].add(e.gate)
                gate[p] = e.gate
            elif e.event == "partition_completed":
                closed[p] += 1
                is_closed[p] = True
                if closed[p] > 1 and not allow_reopen:
                    problems.append(f"partition {p} completed {closed[p]} times")
            continue
        now = gate.get(p, 0)
        if is_closed[p]:
            problems.append(f"partition {p}: item {e.item} {e.event} after the partition completed")
        if e.event == "dispatched":
            if e.gate != now:
                problems.append(f"partition {p}: item {e.item} dispatched at gate {e.gate} while at {now}")
            dispatch_gate[(p, e.item, e.from_version + 1)] = e.gate
        elif e.event in RESULT_EVENTS:
            from_gate = dispatch_gate.get((p, e.item, e.from_version))
            if from_gate is None:
                problems.append(f"partition {p}: result {e.event} of item {e.item} has no dispatch")
                continue
            if from_gate != now:
                problems.append(
                    f"partition {p}: result of item {e.item} at gate {from_gate} committed at {now}"
                )
            if calls is not None and e.attempt is not None:
                n = call_of.get((p, e.item, from_gate, e.attempt))
                later = [v for (q, g), v in first_call_after.items() if q == p and g > from_gate]
                if n is None and e.event in ("complete", "gate"):
                    problems.append(
                        f"partition {p}: committed {e.event} of item {e.item} attempt {e.attempt} "
                        "matches no handler call"
                    )
                elif n is not None and later and n > min(later):
                    problems.append(
                        f"partition {p}: the committed call {n} of item {e.item} at gate "
                        f"{from_gate} came after call {min(later)} at a later gate"
                    )
    return problems


def check_single_completion(events: Iterable[Event], expected: Expected) -> tuple[list[str], int]:
    """Exactly one committed 'complete' per complete item, one failure per failed item."""
    problems: list[str] = []
    completes: dict[tuple[str, str], int] = defaultdict(int)
    fails: dict[tuple[str, str], int] = defaultdict(int)
    for e in events:
        if e.item is None:
            continue
        if e.event == "complete":
            completes[(e.partition, e.item)] += 1
        elif e.event in ("fail", "failed"):
            fails[(e.partition, e.item)] += 1
    for key in sorted(expected.items):
        want_complete = 0 if key in expected.failed else 1
        if completes[key] != want_complete:
            problems.append(f"item {'/'.join(key)} has {completes[key]} committed completions")
        if key in expected.failed and fails[key] != 1:
            problems.append(f"item {'/'.join(key)} has {fails[key]} committed failures")
    return problems, sum(completes.values())


def verify(
    store: Store,
    feed: str,
    expected: Expected,
    calls: list[Call],
    *,
    history: bool = True,
    skip_policy: bool = False,
    allow_reopen: bool = False,
) -> Report:
    """Assert the whole promise for ``feed``; return figures for the test's output."""
    state = read_state(store, feed)
    problems = [f"invariant {p}" for p in check_invariants(store, feed)]
    problems += check_outcomes(state, expected, skip_policy=skip_policy)
    problems += check_results_came_from_calls(state, calls, expected)
    problems += check_calls(calls, expected)
    report = Report(items=len(state.items), calls=len(calls), history_rows=len(state.history))
    seen: set[tuple[str, str, int]] = set()
    for c in calls:
        key = (c.partition, c.item, c.gate)
        if key in seen and not c.outcome.startswith(("500", "timeout", "reset", "poison")):
            report.repeated_calls += 1
        if c.outcome.startswith(("done", "gate")):
            seen.add(key)
    if history:
        single, report.completions = check_single_completion(state.history, expected)
        problems += single
        problems += check_gate_history(state.history, calls, allow_reopen=allow_reopen)
    elif state.history:
        problems.append(f"history is off but {len(state.history)} history rows were written")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])
    return report
