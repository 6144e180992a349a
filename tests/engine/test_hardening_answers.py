"""Whatever one item's answer holds, it ends as that item's retry or failure (issue 10: 1, 2, 6).

Each test runs on every database: the offending item ends retried or failed
with an error naming the cause, every other item completes, and the watcher
stays alive and healthy (its task guard saw no failure, ``/healthz`` has no
problem to report).
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from feedwatch import CallableProcessor, Feed, Item, Result, RetryableError, Store
from feedwatch.observability.health import HealthServer
from feedwatch.settings import MAX_DELAY
from feedwatch.store.records import ItemOutcome
from feedwatch.store.schema import MAX_GATE
from feedwatch.testing import RecordingProcessor, WatcherRunner, wait_for
from tests.conftest import database_url
from tests.engine.helpers import FAST
from tests.support.processes import start_watcher, stop

pytestmark = pytest.mark.engine


def healthy(runner: WatcherRunner) -> None:
    """The watcher is alive and would pass its liveness probe."""
    watcher = runner.watcher
    assert watcher is not None
    assert watcher._failure is None, f"a watcher task died: {watcher._failure!r}"
    assert watcher.liveness.problems() == []
    assert all(not task.done() for task in watcher._tasks), "every side task still runs"


def item(feed: Feed, partition: str, item_id: str) -> Any:
    return next(r for r in feed.items(partition) if r.id == item_id)


def settled(feed: Feed, partition: str, item_id: str) -> bool:
    """The item's result landed: complete, failed, or waiting again with an error."""
    row = item(feed, partition, item_id)
    return row.status in ("complete", "failed") or (row.status == "available" and row.error is not None)


# -- 1. values the database cannot store ------------------------------------------------


class _Raw:
    """A Processor of the user's own: its Results are not built through the contract."""

    async def process(self, item: Item) -> Result:
        if item.id == "huge-gate":
            return Result(done=False, gate=2**40)
        if item.id == "bool-done":
            return Result(done="no", gate=None)  # type: ignore[arg-type]
        return Result.complete()


REPLIES: dict[str, tuple[dict[str, Any], str]] = {
    "gate-2-31": ({"done": False, "gate": 2**31}, f"gate must be between 0 and {MAX_GATE}, not 2147483648"),
    "gate-2-64": ({"done": False, "gate": 2**64}, f"gate must be between 0 and {MAX_GATE}"),
    "gate-negative": ({"done": False, "gate": -1}, "gate must be between 0"),
    "gate-true": ({"done": False, "gate": True}, "gate must be an integer, not True"),
    "gate-float": ({"done": True, "gate": 1.0}, "gate must be an integer, not 1.0"),
    "no-retry-string": (
        {"error": {"message": "upstream down", "no_retry": "false"}},
        "error.no_retry must be true or false, not 'false' (the handler's error: 'upstream down')",
    ),
    "done-string": ({"done": "true"}, "done must be true or false, not 'true'"),
}


def test_replies_that_break_the_contract_are_retried_then_failed_naming_the_field(
    feed: Feed, store: Store
) -> None:
    feed.update(max_retries=1)
    for name in REPLIES:
        feed.enqueue(name, {name: 1})
    feed.enqueue("good", {f"ok{n}": n for n in range(20)})

    def answer(item: Item) -> Any:
        return REPLIES[item.id][0] if item.id in REPLIES else {"done": True}

    with WatcherRunner(store, feed.name, RecordingProcessor(answer), FAST) as runner:
        wait_for(lambda: all(feed.partition(n).status == "failed" for n in REPLIES), timeout=30)
        wait_for(lambda: feed.partition("good").status == "complete", timeout=30)
        healthy(runner)
    for name, (_, message) in REPLIES.items():
        row = item(feed, name, name)
        assert row.status == "failed" and row.attempts == 2, (name, row.status, row.attempts)
        assert "gave up after 2 failed attempts" in (row.error or "") and message in (row.error or ""), (
            row.error
        )


def test_a_processors_own_result_is_checked_like_a_reply(feed: Feed, store: Store) -> None:
    feed.update(max_retries=0)
    feed.enqueue("a", {"huge-gate": 1})
    feed.enqueue("b", {"bool-done": 1})
    feed.enqueue("c", {f"ok{n}": n for n in range(5)})
    with WatcherRunner(store, feed.name, _Raw(), FAST) as runner:
        wait_for(lambda: {feed.partition(p).status for p in "abc"} == {"failed", "complete"}, timeout=30)
        wait_for(lambda: feed.partition("c").status == "complete", timeout=30)
        healthy(runner)
    assert f"gate must be between 0 and {MAX_GATE}, not {2**40}" in (item(feed, "a", "huge-gate").error or "")
    assert "done must be True or False, not 'no'" in (item(feed, "b", "bool-done").error or "")


def _column_max(store: Store) -> int:
    """The largest value an INTEGER column holds on this database."""
    return 2**63 - 1 if store.dialect == "sqlite" else 2**31 - 1


def test_a_result_the_database_refuses_fails_only_its_item_and_the_rest_of_the_batch_commits(
    feed: Feed, store: Store
) -> None:
    """The poll counter one past the column's range: the database refuses that one row."""
    feed.update(poll_limit=0, max_retries=-1, poll_delay=0)  # even "retry forever"
    feed.enqueue("p", {"overflow": 0, **{f"ok{n}": n for n in range(10)}})
    feed.enqueue("q", {f"other{n}": n for n in range(30)})
    i = store.tables.items
    with store.engine.begin() as conn:
        conn.execute(update(i).where(i.c.id == "overflow").values(polls=_column_max(store)))

    def answer(item: Item) -> Result:
        return Result.poll() if item.id == "overflow" else Result.complete()

    settings = FAST.replace(commit_interval=0.2)  # one batch holds the refused row and the others
    with WatcherRunner(store, feed.name, RecordingProcessor(answer), settings) as runner:
        wait_for(lambda: feed.partition("p").status == "failed", timeout=30)
        wait_for(lambda: feed.partition("q").status == "complete", timeout=30)
        healthy(runner)
        later = {"late": 1}
        feed.enqueue("r", later)
        wait_for(lambda: feed.partition("r").status == "complete", timeout=30)
        healthy(runner)
    overflow = item(feed, "p", "overflow")
    assert overflow.status == "failed" and overflow.polls == _column_max(store)
    error = overflow.error or ""
    assert error.startswith("the database refused this item's result (poll, gate 0): "), error
    assert overflow.attempts == 1, "a refused result is not retried: the same answer would be refused again"
    reason = {"sqlite": "OverflowError", "mysql": "Out of range", "postgresql": "out of range"}[store.dialect]
    assert reason in error, error
    assert all(r.status == "complete" for r in feed.items("p") if r.id != "overflow")


def test_the_committer_splits_a_refused_batch_down_to_the_offending_rows(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {f"i{n:02}": n for n in range(13)})
    now = store.now()
    [lease] = store.acquire_leases(
        feed.name, "w1", now=now, until=now + timedelta(seconds=30), limit=10, history=True
    )
    got = store.claim_items(
        feed.name,
        "w1",
        lease.pk,
        epoch=lease.lease_epoch,
        gate=0,
        now=now,
        limit=20,
        max_unanswered=3,
        history=True,
    )
    assert got is not None
    claimed = got[0]
    too_big = 2**64 if store.dialect == "sqlite" else 2**31
    bad = {claimed[3].pk, claimed[9].pk}
    outcomes = [
        ItemOutcome(
            pk=c.pk, partition_pk=lease.pk, version=c.version, kind="gate", status="available",
            gate=too_big if c.pk in bad else 1, next_attempt_at=datetime(2020, 1, 1),
            failures=0, polls=0, attempt=c.attempt, error="nul \x00 and a lone surrogate \ud800",
        )
        for c in claimed
    ]  # fmt: skip
    report = store.commit_results(feed.name, "w1", outcomes, now=store.now(), history=True, token="t" * 32)
    assert set(report.rejected) == bad
    assert report.won == {c.pk for c in claimed} - bad
    assert all(reason for reason in report.rejected.values())
    rows = {r.pk: r for r in feed.items("p")}
    assert {rows[pk].gate for pk in report.won} == {1}
    assert {rows[pk].gate for pk in bad} == {0}, "a refused row is left as it was"
    assert rows[claimed[0].pk].error == "nul \\0 and a lone surrogate ?", "messages are made storable"
    # A retry of the whole batch (same token) recognises what landed and refuses the rest again.
    again = store.commit_results(
        feed.name, "w1", outcomes, now=store.now(), history=True, token="t" * 32, retrying=True
    )
    assert again.won == report.won and set(again.rejected) == bad


# -- 2. answers that cannot be turned into an outcome -------------------------------------


class _BadStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def _awkward(item: Item) -> Any:
    match item.id:
        case "set-data":
            return Result.complete(data={1, 2})
        case "cyclic-data":
            cycle: list[Any] = []
            cycle.append(cycle)
            return Result.complete(data=cycle)
        case "huge-delay":
            raise RetryableError("come back much later", delay=1e300)
        case "inf-delay":
            raise RetryableError("come back never", delay=float("inf"))
        case "nan-delay":
            raise RetryableError("come back whenever", delay=float("nan"))
        case "bad-str":
            raise _BadStrError
        case "system-exit":
            raise SystemExit(3)
        case "not-a-result":
            return 42
    return Result.complete()


def test_answers_that_cannot_become_an_outcome_end_as_the_items_result(feed: Feed, store: Store) -> None:
    feed.update(max_retries=0)
    awkward = ["set-data", "cyclic-data", "huge-delay", "inf-delay", "nan-delay", "bad-str", "system-exit"]
    for name in [*awkward, "not-a-result"]:
        feed.enqueue(name, {name: 1})
    feed.enqueue("good", {f"ok{n}": n for n in range(20)})
    before = store.now()
    processor = CallableProcessor(_awkward, timeout=5, concurrency=4)
    with WatcherRunner(store, feed.name, processor, FAST) as runner:
        wait_for(lambda: all(settled(feed, n, n) for n in [*awkward, "not-a-result"]), timeout=30)
        wait_for(lambda: feed.partition("good").status == "complete", timeout=30)
        healthy(runner)
    expect = {
        "set-data": ("failed", "the result data cannot be stored as JSON: TypeError"),
        "cyclic-data": ("failed", "the result data cannot be stored as JSON: ValueError: Circular reference"),
        "huge-delay": ("available", "come back much later"),
        "inf-delay": ("available", "come back never"),
        "nan-delay": ("available", "come back whenever"),
        "bad-str": ("failed", "_BadStrError"),
        "system-exit": ("failed", "SystemExit: 3"),
        "not-a-result": ("failed", "the processor returned int"),
    }
    for name, (status, message) in expect.items():
        row = item(feed, name, name)
        assert row.status == status and message in (row.error or ""), (name, row.status, row.error)
    for name in ("huge-delay", "inf-delay"):
        due = item(feed, name, name).next_attempt_at
        assert abs((due - before).total_seconds() - MAX_DELAY) < 120, (
            f"{name}: clamped to MAX_DELAY, due {due}"
        )
    assert item(feed, "nan-delay", "nan-delay").next_attempt_at < before + timedelta(minutes=2)


def test_huge_stored_backoff_and_poll_delay_settings_are_clamped(feed: Feed, store: Store) -> None:
    """Rows written before feed delays were bounded (the API now refuses them): a week at most."""
    f = store.tables.feeds
    with store.engine.begin() as conn:  # MariaDB: FLOAT
        huge = {"backoff_base": 1e30, "backoff_cap": 1e35, "poll_delay": 1e30}
        conn.execute(update(f).where(f.c.name == feed.name).values(**huge))
    feed.enqueue("retry", {"r": 1})
    feed.enqueue("poll", {"p": 1})
    feed.enqueue("good", {"g": 1})
    before = store.now()

    def answer(item: Item) -> Result:
        if item.id == "r":
            raise RetryableError("try again")
        return Result.poll() if item.id == "p" else Result.complete()

    with WatcherRunner(store, feed.name, RecordingProcessor(answer), FAST) as runner:
        wait_for(lambda: settled(feed, "retry", "r") and item(feed, "poll", "p").polls == 1, timeout=30)
        wait_for(lambda: feed.partition("good").status == "complete", timeout=30)
        healthy(runner)
    for partition, item_id in (("retry", "r"), ("poll", "p")):
        row = item(feed, partition, item_id)
        assert row.status == "available"
        waits = (row.next_attempt_at - before).total_seconds()
        assert MAX_DELAY - 120 < waits < MAX_DELAY + 120, (item_id, waits)
    assert item(feed, "retry", "r").error == "try again"


# -- 6. sync processors that hang -------------------------------------------------------------


def test_hung_sync_calls_time_out_honestly_and_the_others_still_run(feed: Feed, store: Store) -> None:
    feed.update(max_retries=0)
    release = threading.Event()

    def work(item: Item) -> Result:
        if item.id.startswith("hang"):
            release.wait(60)
        return Result.complete()

    feed.enqueue("hang", {"hang1": 1, "hang2": 2})
    feed.enqueue("good", {f"ok{n}": n for n in range(30)})
    settings = FAST.replace(concurrency=4, handler_timeout=0.5)
    processor = CallableProcessor(work, timeout=0.5, concurrency=4)
    try:
        with WatcherRunner(store, feed.name, processor, settings) as runner:
            wait_for(lambda: feed.partition("hang").status == "failed", timeout=30)
            wait_for(lambda: feed.partition("good").status == "complete", timeout=30)
            healthy(runner)
    finally:
        release.set()
    for name in ("hang1", "hang2"):
        error = item(feed, "hang", name).error or ""
        assert "did not answer within 0.5 s (timed out; its thread may still be running" in error, error


def test_a_call_that_finds_every_thread_hung_says_so_instead_of_a_false_timeout(
    feed: Feed, store: Store
) -> None:
    feed.update(max_retries=0)
    release = threading.Event()
    started = threading.Event()

    def work(item: Item) -> Result:
        if item.id == "hang":
            started.set()
            release.wait(60)
        return Result.complete()

    feed.enqueue("a", {"hang": 1})
    settings = FAST.replace(concurrency=2, handler_timeout=0.3)
    processor = CallableProcessor(work, timeout=0.3, concurrency=1)
    try:
        with WatcherRunner(store, feed.name, processor, settings) as runner:
            wait_for(lambda: feed.partition("a").status == "failed", timeout=30)
            feed.enqueue("b", {"starved": 1})
            wait_for(lambda: feed.partition("b").status == "failed", timeout=30)
            healthy(runner)
    finally:
        release.set()
    error = item(feed, "b", "starved").error or ""
    assert "did not start within 0.3 s: all 1 of its threads (concurrency) are busy, 1 with calls" in error


def hang_forever(item: Item) -> Result:
    """Loaded by ``feedwatch watch --processor`` below: a sync call that never returns."""
    threading.Event().wait()
    return Result.complete()


def test_watch_exits_within_the_grace_period_after_sigterm_while_sync_calls_hang(
    feed: Feed, store: Store, db_url: str
) -> None:
    feed.enqueue("p", {f"stuck{n}": n for n in range(3)})
    proc = start_watcher(
        db_url,
        feed.name,
        processor=f"{__name__}:hang_forever",
        args=["--grace-period", "1", "--handler-timeout", "60", "--concurrency", "3"],
    )
    try:
        wait_for(lambda: all(r.attempts == 1 for r in feed.items("p")), timeout=30)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - sent
    finally:
        stop(proc, signal.SIGKILL)
    assert code == 0
    print(f"exited {took:.1f} s after SIGTERM")
    assert took < 1 + 5, f"exited {took:.1f} s after SIGTERM (grace period 1 s)"
    wait_for(lambda: feed.partition("p").owner is None, timeout=10, message="its lease was released")


# -- the liveness probe ----------------------------------------------------------------


@contextmanager
def serve_health(runner: WatcherRunner) -> Iterator[Callable[[], tuple[int, str]]]:
    """The watcher's real health server on a free loopback port; yields a ``GET /healthz``."""
    assert runner.watcher is not None and runner._loop is not None
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    server = HealthServer(
        port, runner.watcher.metrics, {}, host="127.0.0.1", liveness=runner.watcher.liveness
    )
    asyncio.run_coroutine_threadsafe(server.start(), runner._loop).result(10)

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    try:
        yield get
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), runner._loop).result(10)


def unhealthy(probe: Callable[[], tuple[int, str]]) -> str | None:
    status, body = probe()
    return body if status == 503 else None


class _Stuck:
    """A Processor of the user's own that ignores every deadline."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def process(self, item: Item) -> Result:
        if item.id == "stuck":
            await self.release.wait()
        return Result.complete()


def test_healthz_turns_unhealthy_when_an_item_stays_in_flight_past_its_deadline(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"stuck": 1})
    feed.enqueue("q", {"fine": 1})
    settings = FAST.replace(handler_timeout=0.3, handler_connect_timeout=0.1, grace_period=0.2)
    processor = _Stuck()
    with WatcherRunner(store, feed.name, processor, settings) as runner:
        assert runner.watcher is not None
        with serve_health(runner) as probe:
            wait_for(lambda: feed.partition("q").status == "complete", timeout=30)
            body = wait_for(lambda: unhealthy(probe), timeout=30)
            assert "1 item(s) in flight for over 0.6 s" in body and "p/stuck" in body, body
            assert runner._loop is not None
            runner._loop.call_soon_threadsafe(processor.release.set)
            wait_for(lambda: probe()[0] == 200, timeout=30)
            wait_for(lambda: feed.partition("p").status == "complete", timeout=30)


def test_healthz_turns_unhealthy_while_results_cannot_be_committed_for_longer_than_the_lease(
    sqlite_url: str, feed_name: str
) -> None:
    """Another connection holds SQLite's write lock: the committer's writes wait, then heal."""
    store = Store.open(database_url("sqlite", sqlite_url))
    lock = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        feed = Feed.create(store, feed_name)
        feed.enqueue("p", {"x": 1})
        go = threading.Event()

        def work(item: Item) -> Result:
            go.wait(30)
            return Result.complete()

        settings = FAST.replace(handler_timeout=30)  # the item check stays quiet: only commits wedge
        with (
            WatcherRunner(store, feed.name, CallableProcessor(work, timeout=30), settings) as runner,
            serve_health(runner) as probe,
        ):
            wait_for(lambda: feed.items("p")[0].attempts == 1, timeout=30)
            lock.execute("BEGIN EXCLUSIVE")
            go.set()
            body = wait_for(lambda: unhealthy(probe), timeout=30)
            assert "results not committed for" in body and "over the lease (2 s)" in body, body
            lock.execute("ROLLBACK")
            wait_for(lambda: probe()[0] == 200, timeout=60)
            wait_for(lambda: feed.items("p")[0].status == "complete", timeout=30)
            healthy(runner)
    finally:
        go.set()
        if lock.in_transaction:
            lock.execute("ROLLBACK")
        lock.close()
        store.close()
