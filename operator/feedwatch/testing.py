"""Test helpers for feedwatch users (and feedwatch's own tests).

- :class:`WatcherRunner` runs a watcher in a background thread, as kopf's
  ``KopfRunner`` runs an operator: ``with WatcherRunner(...) as runner: ...``.
- :class:`RecordingProcessor` records every call and answers with a function.
- :func:`check_invariants` reads a feed's rows and history and returns every
  violation of the invariants of docs/guarantees.md; :func:`assert_invariants` raises.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from feedwatch.engine import Watcher
from feedwatch.processors.base import Item, Result
from feedwatch.settings import WatcherSettings
from feedwatch.store import Store

Answer = Callable[[Item], Result | Any]


@dataclass
class Call:
    partition: str
    item: str
    gate: int
    attempt: int
    at: float


@dataclass
class RecordingProcessor:
    """Records every call; answers with ``answer(item)`` (default: complete)."""

    answer: Answer | None = None
    delay: float = 0.0
    calls: list[Call] = field(default_factory=list)

    async def process(self, item: Item) -> Result:
        self.calls.append(Call(item.partition, item.id, item.gate, item.attempt, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.answer is None:
            return Result.complete()
        value = self.answer(item)
        if asyncio.iscoroutine(value):
            value = await value
        from feedwatch.processors.python import coerce_result  # noqa: PLC0415

        return coerce_result(value)


class WatcherRunner:
    """Runs a :class:`Watcher` on its own event loop in a thread."""

    def __init__(
        self,
        store: Store,
        feed: str,
        processor: Any,
        settings: WatcherSettings | None = None,
        **kwargs: Any,
    ) -> None:
        self._args = (store, feed, processor, settings)
        self._kwargs = kwargs
        self.watcher: Watcher | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.error: BaseException | None = None

    def __enter__(self) -> WatcherRunner:
        self._thread = threading.Thread(target=self._main, name="feedwatch-runner", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self.watcher = Watcher(*self._args, **self._kwargs)
            loop.run_until_complete(self._run(self.watcher))
        except BaseException as e:
            self.error = e
            self._ready.set()
        finally:
            loop.close()

    async def _run(self, watcher: Watcher) -> None:
        await watcher.start()
        self._ready.set()
        try:
            await watcher.run(handle_signals=False)
        finally:
            await watcher.stop()

    def stop(self, timeout: float = 60) -> None:
        if self._loop is not None and self.watcher is not None and not self._loop.is_closed():
            try:
                self._loop.call_soon_threadsafe(self.watcher.request_stop)
            except RuntimeError:
                pass
        if self._thread is not None:
            self._thread.join(timeout)
        if self.error is not None:
            raise self.error


def wait_for(
    condition: Callable[[], Any],
    timeout: float = 30,
    interval: float = 0.05,
    message: str | Callable[[], str] = "",
) -> Any:
    """Poll ``condition`` every ``interval`` seconds until it returns something truthy, and return that.

    After ``timeout`` seconds raise :class:`AssertionError` naming ``message`` (a text, or a
    function called only then, to describe the state at the time) and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            what = (message() if callable(message) else message) or condition
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last value: {value!r}")
        time.sleep(interval)


# -- invariants ---------------------------------------------------------------------


def check_invariants(store: Store, feed: str) -> list[str]:
    """Every violation of the invariants (docs/guarantees.md, "Invariants") in ``feed``, from the database."""
    t = store.tables
    problems: list[str] = []
    with store.engine.connect() as conn:
        policy = conn.execute(select(t.feeds.c.failure_policy).where(t.feeds.c.name == feed)).scalar()
        parts = {
            r.pk: r
            for r in conn.execute(
                select(
                    t.partitions.c.pk, t.partitions.c.id, t.partitions.c.status, t.partitions.c.gate
                ).where(t.partitions.c.feed == feed)
            )
        }
        items = conn.execute(
            select(
                t.items.c.pk, t.items.c.partition_pk, t.items.c.id, t.items.c.status, t.items.c.gate
            ).where(t.items.c.partition_pk.in_(list(parts) or [-1]))
        ).all()
        history = conn.execute(
            select(
                t.history.c.pk,
                t.history.c.partition_pk,
                t.history.c.item_pk,
                t.history.c.event,
                t.history.c.from_version,
                t.history.c.gate,
            )
            .where(t.history.c.feed == feed)
            .order_by(t.history.c.pk)
        ).all()
    for it in items:
        part = parts[it.partition_pk]
        if it.status == "available" and it.gate < part.gate:
            problems.append(
                f"1: item {part.id}/{it.id} is available at gate {it.gate} "
                f"below its partition's gate {part.gate}"
            )
        if (
            part.status == "complete"
            and it.status != "complete"
            and not (policy == "skip" and it.status == "failed")
        ):
            problems.append(f"2: partition {part.id} is complete while item {it.id} is {it.status}")
    problems += check_history(
        [(h.partition_pk, h.item_pk, h.event, h.from_version, h.gate) for h in history],
        {pk: p.id for pk, p in parts.items()},
    )
    return problems


def check_history(
    events: list[tuple[int, int | None, str, int, int]], names: dict[int, str] | None = None
) -> list[str]:
    """Invariants 3-5 over history rows ``(partition_pk, item_pk, event, from_version, gate)`` in order."""
    names = names or {}
    problems: list[str] = []
    item_versions: set[tuple[int, int]] = set()
    completions: dict[int, int] = defaultdict(int)
    gates: dict[int, int] = {}
    for partition_pk, item_pk, event, from_version, gate in events:
        name = names.get(partition_pk, str(partition_pk))
        if item_pk is not None:
            if event == "redriven":
                completions[item_pk] = 0
            key = (item_pk, from_version)
            if key in item_versions:
                problems.append(f"3: item {item_pk} of {name} changed twice from version {from_version}")
            item_versions.add(key)
            if event == "complete":
                completions[item_pk] += 1
                if completions[item_pk] > 1:
                    problems.append(f"5: item {item_pk} of {name} completed twice in one re-drive")
            continue
        if event in ("gate_moved", "redriven"):
            gates[partition_pk] = gate
        elif event == "gate_advanced":
            previous = gates.get(partition_pk, -1)
            if gate <= previous:
                problems.append(
                    f"4: partition {name} gate went down from {previous} to {gate} without a user"
                )
            gates[partition_pk] = gate
    return problems


def assert_invariants(store: Store, feed: str) -> None:
    problems = check_invariants(store, feed)
    if problems:
        raise AssertionError("invariants violated:\n" + "\n".join(problems[:50]))
