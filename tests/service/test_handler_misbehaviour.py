"""A handler that misbehaves in every documented way, behind one `feedwatch watch` process.

One watcher works a feed with a partition per misbehaviour: the misbehaving
item plus two well-behaved ones. Feed settings keep it to seconds: 2 retries
(3 attempts), 50-100 ms backoff, 3 polls; the watcher reads at most 4 MB of a
reply and waits 1 s for one. Each test then checks one misbehaviour's end
state from the database (status, attempts, the error message on the item and
in its history), and that nothing else was disturbed.
"""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from feedwatch import Feed, Store
from tests.service.helpers import (
    answers,
    fresh_sqlite,
    history,
    log_text,
    store_for,
    watched_to_the_end,
)
from tests.support.handler import Handler

pytestmark = pytest.mark.service

MAX_RETRIES = 2  # so 3 attempts
POLL_LIMIT = 3
MAX_BODY = 4 * 1024 * 1024

#: partition -> the misbehaving item's data (and the gate it is enqueued at)
CASES: dict[str, tuple[dict[str, Any], int]] = {
    "http-500": ({"behave": "500"}, 0),
    "http-500-then-ok": ({"behave": "500_then_ok", "times": 2}, 0),
    "http-302": ({"behave": "302"}, 0),
    "empty-body": ({"behave": "empty"}, 0),
    "html": ({"behave": "html"}, 0),
    "empty-object": ({"behave": "{}"}, 0),
    "ten-megabytes": ({"behave": "big"}, 0),
    "data-too-big": ({"behave": "big_data"}, 0),
    "timeout": ({"behave": "sleep", "seconds": 30}, 0),
    "connection-closed": ({"behave": "close"}, 0),
    "http-429": ({"behave": "429", "times": 3, "after": 1}, 0),
    "error": ({"behave": "error"}, 0),
    "no-retry": ({"behave": "no_retry"}, 0),
    "lower-gate": ({"behave": "lower_gate"}, 2),
    "endless-poll": ({"behave": "poll"}, 0),
    "gofeed-spelling": ({"behave": "gofeed"}, 0),
}


@dataclass
class Run:
    store: Store
    feed: Feed
    handler: Handler
    watcher: subprocess.Popen[bytes]
    log: Path
    health: str

    def item(self, partition: str, item: str = "bad") -> Any:
        return next(r for r in self.feed.items(partition) if r.id == item)

    def events(self, partition: str, item: str = "bad") -> list[Any]:
        pk = self.item(partition, item).pk
        return [h for h in history(self.store, self.feed.name) if h.item_pk == pk]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    directory = tmp_path_factory.mktemp("misbehaviour")
    url = fresh_sqlite(directory)
    store = store_for(url)
    name = f"bad{uuid.uuid4().hex[:8]}"
    feed = Feed.create(
        store,
        name,
        max_retries=MAX_RETRIES,
        backoff_base=0.05,
        backoff_cap=0.1,
        poll_delay=0.05,
        poll_limit=POLL_LIMIT,
    )
    for partition, (data, gate) in CASES.items():
        feed.enqueue(partition, {"bad": data, "good1": {"x": 1}, "good2": {"x": 2}}, gate=gate)
    feed.enqueue("control", {f"c{n}": {"n": n} for n in range(5)})
    args = ["--handler-timeout", "1", "--handler-max-body", str(MAX_BODY), "--log-level", "DEBUG"]
    with watched_to_the_end(directory, url, feed, args=args, timeout=90) as watched:
        yield Run(store, feed, watched.handler, watched.watcher, watched.log, watched.health)


def assert_retried_then_failed(run: Run, partition: str, *fragments: str) -> None:
    """Retried MAX_RETRIES times with the message on the item; then failed saying so."""
    item = run.item(partition)
    assert item.status == "failed", item
    assert item.attempts == MAX_RETRIES + 1
    assert item.error.startswith(f"gave up after {MAX_RETRIES + 1} failed attempts"), item.error
    retries = [e for e in run.events(partition) if e.event == "retry"]
    assert len(retries) == MAX_RETRIES
    for text in (item.error, *(e.message for e in retries)):
        for fragment in fragments:
            assert fragment in text, f"{fragment!r} not in {text!r}"
    assert len(run.handler.calls(item="bad", partition=partition)) == MAX_RETRIES + 1
    assert_partition_failed_by_it(run, partition)


def assert_failed_at_once(run: Run, partition: str, *fragments: str) -> None:
    item = run.item(partition)
    assert item.status == "failed", item
    assert item.attempts == 1
    for fragment in fragments:
        assert fragment in item.error, f"{fragment!r} not in {item.error!r}"
    assert not [e for e in run.events(partition) if e.event == "retry"]
    assert_partition_failed_by_it(run, partition)


def assert_partition_failed_by_it(run: Run, partition: str) -> None:
    part = run.feed.partition(partition)
    assert part.status == "failed"
    assert (part.error or "").startswith("item 'bad' failed at gate"), part.error
    assert_others_unaffected(run, partition)


def assert_others_unaffected(run: Run, partition: str) -> None:
    """The well-behaved items of the partition completed at their first attempt."""
    for good in ("good1", "good2"):
        item = run.item(partition, good)
        assert (item.status, item.attempts, item.error) == ("complete", 1, None), item


def test_handler_500_is_retried_with_the_status_recorded(run: Run) -> None:
    assert_retried_then_failed(run, "http-500", "HTTP 500", "boom: internal handler error")


def test_handler_500_then_success_completes_and_clears_the_error(run: Run) -> None:
    item = run.item("http-500-then-ok")
    assert (item.status, item.attempts, item.error) == ("complete", 3, None)
    retries = [e for e in run.events("http-500-then-ok") if e.event == "retry"]
    assert [("HTTP 500" in (e.message or "")) for e in retries] == [True, True]
    assert run.feed.partition("http-500-then-ok").status == "complete"
    assert_others_unaffected(run, "http-500-then-ok")


def test_handler_redirect_is_retried_not_followed(run: Run) -> None:
    assert_retried_then_failed(run, "http-302", "HTTP 302")


def test_handler_empty_body_is_retried_as_not_json(run: Run) -> None:
    assert_retried_then_failed(run, "empty-body", "not JSON", "an empty body")


def test_handler_html_page_is_retried_with_a_preview_of_it(run: Run) -> None:
    assert_retried_then_failed(run, "html", "not JSON", "<!DOCTYPE html>")


def test_handler_empty_object_is_neither_done_nor_error_and_is_retried(run: Run) -> None:
    assert_retried_then_failed(run, "empty-object", "neither done/complete nor error", "{}")


def test_handler_ten_megabyte_reply_is_refused_over_handler_max_body(run: Run) -> None:
    assert_retried_then_failed(run, "ten-megabytes", f"over {MAX_BODY} bytes (handler_max_body)")


def test_handler_result_data_over_max_item_bytes_fails_the_item(run: Run) -> None:
    assert_failed_at_once(run, "data-too-big", "over the feed's limit of 1048576 bytes")


def test_handler_sleeping_past_the_timeout_is_retried_as_a_timeout(run: Run) -> None:
    assert_retried_then_failed(run, "timeout", "did not answer within 1 s")


def test_handler_closing_the_connection_is_retried_as_a_connection_error(run: Run) -> None:
    assert_retried_then_failed(run, "connection-closed", "cannot reach the handler", "Disconnected")


def test_handler_429_with_retry_after_waits_and_does_not_count_as_a_failure(run: Run) -> None:
    item = run.item("http-429")
    # 3 answers of 429 and a success: 4 attempts, more than max_retries allows failures.
    assert (item.status, item.attempts, item.error) == ("complete", 4, None), item
    delays = [e for e in run.events("http-429") if e.event == "delay"]
    assert len(delays) == 3
    assert all("HTTP 429 with Retry-After 1" in (e.message or "") for e in delays)
    times = [c["t"] for c in run.handler.calls(item="bad", partition="http-429")]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    assert min(gaps) >= 0.95, f"Retry-After: 1 not honoured: {gaps}"
    assert run.feed.partition("http-429").status == "complete"
    assert_others_unaffected(run, "http-429")


def test_handler_error_reply_is_retried_with_its_message(run: Run) -> None:
    assert_retried_then_failed(run, "error", "transient trouble in the handler")


def test_handler_error_no_retry_fails_the_item_at_once(run: Run) -> None:
    assert_failed_at_once(run, "no-retry", "bad input: cannot parse")
    assert len(run.handler.calls(item="bad", partition="no-retry")) == 1


def test_handler_answering_a_gate_lower_than_the_partitions_fails_the_item(run: Run) -> None:
    assert_failed_at_once(run, "lower-gate", "answered gate 1, lower than the item's gate 2")
    assert run.feed.partition("lower-gate").gate == 2


def test_handler_endless_not_done_polls_fail_at_the_poll_limit(run: Run) -> None:
    item = run.item("endless-poll")
    assert item.status == "failed"
    assert f"still not done after {POLL_LIMIT} polls" in item.error
    assert item.attempts == POLL_LIMIT + 1
    assert len([e for e in run.events("endless-poll") if e.event == "poll"]) == POLL_LIMIT
    assert_partition_failed_by_it(run, "endless-poll")


def test_handler_gofeed_spelling_complete_and_response_is_accepted(run: Run) -> None:
    item = run.item("gofeed-spelling")
    assert item.status == "complete"
    assert json.loads(item.data or b"null")["via"] == "gofeed"
    assert_others_unaffected(run, "gofeed-spelling")


def test_other_partitions_are_unaffected_by_the_misbehaviour(run: Run) -> None:
    assert run.feed.partition("control").status == "complete"
    for item in run.feed.items("control"):
        assert (item.status, item.attempts, item.error) == ("complete", 1, None)


def test_watcher_keeps_running_through_every_misbehaviour_and_stops_cleanly(run: Run) -> None:
    assert run.watcher.poll() is None, log_text(run.log)[-3000:]
    assert answers(run.health + "/healthz") == (200, '{"status": "ok"}')
    text = log_text(run.log)
    assert "Traceback" not in text, text[-3000:]
    assert "watcher_failed" not in text, text[-3000:]
    run.watcher.send_signal(signal.SIGTERM)
    assert run.watcher.wait(30) == 0, log_text(run.log)[-3000:]
