"""Retries, failures, polls, re-drive and the failure policies, on every database."""

from __future__ import annotations

import asyncio

import pytest

from feedwatch import CallableProcessor, Feed, Item, PermanentError, Result, RetryableError, Store
from feedwatch.testing import RecordingProcessor, WatcherRunner, wait_for
from tests.engine.helpers import FAST, all_closed

pytestmark = pytest.mark.engine


def answer(item: Item) -> Result:
    if item.id == "flaky" and item.attempt <= 2:
        raise RetryableError(f"flaky failure {item.attempt}")
    if item.id == "doomed":
        raise PermanentError("doomed: cannot be processed")
    if item.id == "hopeless":
        raise RetryableError("always down")
    return Result.complete()


def test_an_item_failing_twice_then_succeeding_completes_with_both_errors_in_history(
    feed: Feed, store: Store
) -> None:
    feed.enqueue("p", {"flaky": 1, "fine": 2})
    with WatcherRunner(store, feed.name, RecordingProcessor(answer), FAST):
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
    flaky = next(r for r in feed.items("p") if r.id == "flaky")
    assert (flaky.status, flaky.attempts) == ("complete", 3)
    events = [
        (h.event, h.message) for h in feed.history("p") if h.item_pk == flaky.pk and h.event != "dispatched"
    ]
    assert events == [("retry", "flaky failure 1"), ("retry", "flaky failure 2"), ("complete", None)]


def test_permanent_and_exhausted_errors_fail_the_item_the_gate_still_runs_then_the_partition_fails(
    feed: Feed, store: Store
) -> None:
    feed.update(max_retries=2)
    feed.enqueue("p", {"doomed": 1, "hopeless": 2, **{f"ok{n}": n for n in range(10)}})
    feed.enqueue("p", {"next-gate": 1}, gate=1)
    processor = RecordingProcessor(answer)
    with WatcherRunner(store, feed.name, processor, FAST):
        wait_for(lambda: feed.partition("p").status == "failed", timeout=30)
        items = {r.id: r for r in feed.items("p")}
        assert items["doomed"].status == "failed" and "doomed" in (items["doomed"].error or "")
        assert items["hopeless"].status == "failed"
        assert "gave up after 3 failed attempts" in (items["hopeless"].error or "")
        assert all(items[f"ok{n}"].status == "complete" for n in range(10)), "the rest of the gate ran"
        assert items["next-gate"].status == "available", "the failed gate blocks the next one"
        part = feed.partition("p")
        assert part.owner is None and "failed at gate 0" in (part.error or "")
        calls = len(processor.calls)
        wait_for(lambda: feed.partition("p").owner is None, timeout=1)
    assert len(processor.calls) == calls, "no watcher leases a failed partition"


def test_a_redrive_after_the_fix_completes_the_failed_partition(feed: Feed, store: Store) -> None:
    feed.update(max_retries=0)
    feed.enqueue("p", {"doomed": 1, "ok": 2})
    fixed = {"done": False}

    def maybe(item: Item) -> Result:
        if item.id == "doomed" and not fixed["done"]:
            raise PermanentError("not yet")
        return Result.complete()

    with WatcherRunner(store, feed.name, RecordingProcessor(maybe), FAST):
        wait_for(lambda: feed.partition("p").status == "failed", timeout=30)
        fixed["done"] = True
        assert feed.retry("p") == 1
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
    doomed = next(r for r in feed.items("p") if r.id == "doomed")
    assert doomed.status == "complete" and doomed.attempts == 1


def test_the_skip_policy_completes_around_a_failed_item_that_stays_visible(feed: Feed, store: Store) -> None:
    feed.update(failure_policy="skip")
    feed.enqueue("p", {"doomed": 1, "ok": 2})
    feed.enqueue("p", {"later": 3}, gate=1)
    with WatcherRunner(store, feed.name, RecordingProcessor(answer), FAST):
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
    items = {r.id: r.status for r in feed.items("p")}
    assert items == {"doomed": "failed", "ok": "complete", "later": "complete"}
    assert feed.status("p").failed[0][0] == "doomed"


def test_polls_call_again_and_fail_past_the_poll_limit(feed: Feed, store: Store) -> None:
    feed.update(poll_limit=3, poll_delay=0.01)
    feed.enqueue("p", {"never": 1, "third-time": 2})

    def poller(item: Item) -> Result:
        if item.id == "third-time" and item.attempt >= 3:
            return Result.complete()
        return Result.poll()

    with WatcherRunner(store, feed.name, RecordingProcessor(poller), FAST):
        wait_for(lambda: all_closed(feed), timeout=30)
    items = {r.id: r for r in feed.items("p")}
    assert items["third-time"].status == "complete" and items["third-time"].failures == 0
    assert items["never"].status == "failed" and "after 3 polls" in (items["never"].error or "")


def test_a_delay_asked_by_the_processor_is_not_counted_as_a_failure(feed: Feed, store: Store) -> None:
    feed.update(max_retries=0)
    feed.enqueue("p", {"busy": 1})

    def busy(item: Item) -> Result:
        if item.attempt < 3:
            raise RetryableError("429 busy", delay=0.05)
        return Result.complete()

    with WatcherRunner(store, feed.name, RecordingProcessor(busy), FAST):
        wait_for(lambda: feed.partition("p").status == "complete", timeout=30)
    assert feed.items("p")[0].attempts == 3


def test_an_in_process_processor_past_its_deadline_is_retried_as_a_timeout(feed: Feed, store: Store) -> None:
    feed.update(max_retries=1)
    feed.enqueue("p", {"slow": 1})

    async def slow(item: Item) -> Result:
        await asyncio.sleep(5)
        return Result.complete()

    settings = FAST.replace(handler_timeout=0.1)
    with WatcherRunner(store, feed.name, CallableProcessor(slow, timeout=0.1), settings):
        wait_for(lambda: feed.partition("p").status == "failed", timeout=30)
    assert "did not answer within 0.1 s" in (feed.items("p")[0].error or "")


def test_a_gate_lower_than_the_items_is_a_handler_bug_that_fails_the_item(feed: Feed, store: Store) -> None:
    feed.enqueue("p", {"a": 1}, gate=2)
    with WatcherRunner(store, feed.name, RecordingProcessor(lambda item: Result.wait_at(1)), FAST):
        wait_for(lambda: feed.partition("p").status == "failed", timeout=30)
    assert "lower than the item's gate 2" in (feed.items("p")[0].error or "")
