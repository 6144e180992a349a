"""The reply contract, delay clamping, outcome safety, the liveness evidence, the daemon pool."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest

from feedwatch import PermanentError, Result, RetryableError
from feedwatch.engine import retrying
from feedwatch.observability.health import Liveness
from feedwatch.processors.base import Item
from feedwatch.processors.contract import check_gate, parse_reply
from feedwatch.processors.http import HTTPProcessor
from feedwatch.processors.python import coerce_result
from feedwatch.processors.threads import DaemonThreadPool
from feedwatch.settings import MAX_DELAY, FeedSettings
from feedwatch.store.records import Claimed
from feedwatch.store.schema import MAX_GATE

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1)
CLAIMED = Claimed(
    pk=1, id="i", gate=3, version=2, attempt=1, failures=0, polls=0, data=None,
    content_type="application/json", suspect=False,
)  # fmt: skip


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ({"done": False, "gate": True}, "gate must be an integer, not True"),
        ({"done": False, "gate": False}, "gate must be an integer, not False"),
        ({"done": False, "gate": "2"}, "gate must be an integer, not '2'"),
        ({"done": False, "gate": 2**31}, f"gate must be between 0 and {MAX_GATE}, not 2147483648"),
        ({"done": False, "gate": -5}, "gate must be between 0 and"),
        ({"done": 1}, "done must be true or false, not 1"),
        ({"complete": "yes"}, "done must be true or false, not 'yes'"),
        (
            {"error": {"message": "m", "no_retry": "false"}},
            "error.no_retry must be true or false, not 'false'",
        ),
        ({"error": {"message": "m", "no_retry": 1}}, "error.no_retry must be true or false, not 1"),
        ([1, 2], "the reply is JSON list, not an object"),
    ],
)
def test_a_reply_that_breaks_the_contract_is_a_retryable_error_naming_the_field(
    reply: Any, message: str
) -> None:
    with pytest.raises(RetryableError) as raised:
        parse_reply(reply)
    assert type(raised.value) is RetryableError and message in str(raised.value)


def test_only_a_json_true_no_retry_makes_an_error_permanent() -> None:
    with pytest.raises(PermanentError, match="bad input"):
        parse_reply({"error": {"message": "bad input", "no_retry": True}})
    for no_retry in (False, None):
        with pytest.raises(RetryableError) as raised:
            parse_reply({"error": {"message": "later", "no_retry": no_retry}})
        assert type(raised.value) is RetryableError


def test_valid_gates_pass_at_both_ends_of_the_column() -> None:
    assert check_gate(0) == 0 and check_gate(MAX_GATE) == MAX_GATE
    assert parse_reply({"done": False, "gate": MAX_GATE}).gate == MAX_GATE


def test_a_python_result_is_checked_like_a_reply() -> None:
    with pytest.raises(RetryableError, match="gate must be an integer, not True"):
        coerce_result(Result(done=False, gate=True))
    with pytest.raises(RetryableError, match="done must be True or False, not 'no'"):
        coerce_result(Result(done="no"))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("given", "clamped"),
    [(1e300, MAX_DELAY), (float("inf"), MAX_DELAY), (float("nan"), 0.0),
     (-5, 0.0), ("soon", 0.0), (None, 0.0), (2**2000, MAX_DELAY), (12.5, 12.5)],
    ids=["1e300", "inf", "nan", "negative", "text", "none", "2**2000", "normal"],
)  # fmt: skip
def test_every_delay_is_clamped_to_a_week(given: Any, clamped: float) -> None:
    assert retrying.clamp_delay(given) == clamped
    assert retrying.later(datetime.max - timedelta(days=8), given) <= datetime.max


def test_backoff_with_the_largest_settings_and_huge_failure_counts_stays_within_a_week() -> None:
    settings = FeedSettings(backoff_base=MAX_DELAY, backoff_cap=MAX_DELAY)
    rng = random.Random(1)
    for failures in (1, 2, 100, 10**6):
        assert 0 <= retrying.backoff(failures, settings, rng) <= MAX_DELAY


class _Treacherous(Result):
    """A Result whose data cannot even be read."""

    def __getattribute__(self, name: str) -> Any:
        if name == "data":
            raise RuntimeError("data exploded")
        return super().__getattribute__(name)


def test_an_outcome_is_built_whatever_the_answer_holds() -> None:
    week = MAX_DELAY
    settings = FeedSettings(max_retries=3, backoff_base=week, backoff_cap=week, poll_delay=week)
    rng = random.Random(0)
    answers: list[Any] = [
        _Treacherous(),
        Result.complete(data={1}),
        Result.poll(),
        Result(done=False, gate=2**40),
        RetryableError("slow down", delay=1e300),
        RetryableError("x"),
        SystemExit(2),
    ]
    for answer in answers:
        outcome = retrying.outcome(7, CLAIMED, answer, settings=settings, now=NOW, rng=rng)
        assert outcome.pk == 1 and outcome.partition_pk == 7 and outcome.version == 2
        assert outcome.next_attempt_at <= NOW + timedelta(seconds=MAX_DELAY)
        assert outcome.kind == "poll" or outcome.error, (answer, outcome)
    treacherous = retrying.outcome(7, CLAIMED, _Treacherous(), settings=settings, now=NOW, rng=rng)
    assert treacherous.kind == "retry" and "RuntimeError: data exploded" in (treacherous.error or "")


def test_liveness_reports_an_item_in_flight_past_its_deadline_and_a_committer_failing_past_the_lease() -> (
    None
):
    clock = [100.0]
    liveness = Liveness(item_deadline=10, commit_deadline=30, clock=lambda: clock[0])
    liveness.item_started((1, 1), "p/a")
    liveness.commit_failed("cannot reach the database")
    clock[0] += 10
    assert liveness.problems() == [], "at the deadline, not past it"
    clock[0] += 1
    [stuck] = liveness.problems()
    assert "1 item(s) in flight for over 10 s" in stuck and "p/a for 11 s" in stuck
    liveness.item_finished((1, 1))
    assert liveness.problems() == []
    clock[0] += 20
    liveness.commit_failed("cannot reach the database again")
    [failing] = liveness.problems()
    assert "results not committed for 31 s, over the lease (30 s)" in failing
    assert "cannot reach the database again" in failing
    liveness.commit_succeeded()
    assert liveness.problems() == []
    liveness.commit_started()
    clock[0] += 31
    [hanging] = liveness.problems()
    assert "results not committed for 31 s, over the lease (30 s): a commit has not returned" in hanging
    liveness.commit_succeeded()
    liveness.died("task committing failed")
    assert liveness.problems() == ["task committing failed"]


def test_the_daemon_pool_is_bounded_and_its_shutdown_never_waits_for_a_hung_call() -> None:
    pool = DaemonThreadPool(2)
    release = threading.Event()
    hung = [pool.submit(release.wait, 60) for _ in range(2)]
    queued = pool.submit(lambda: "ran")
    deadline = time.monotonic() + 10
    while pool.busy < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pool.busy == 2 and not queued.running(), "two threads at most: the third call waits"
    started = time.monotonic()
    pool.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - started < 1
    assert queued.cancelled()
    assert all(t.daemon for t in threading.enumerate() if t.name.startswith("feedwatch-processor"))
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(lambda: None)
    release.set()
    assert all(f.result(10) is True for f in hung)


def test_an_item_id_that_cannot_be_an_http_header_fails_permanently_and_says_why() -> None:
    processor = HTTPProcessor("http://127.0.0.1:9/", feed="f", headers={"Authorization": "secret\n"})
    item = Item(feed="f", partition="p", id="a\r\nX-Evil: 1", gate=0, attempt=1, data=None, content_type="x")

    async def call() -> None:
        try:
            await processor.process(item)
        finally:
            await processor.close()

    with pytest.raises(
        PermanentError, match=r"X-Feed-Item 'a\\r\\nX-Evil: 1' holds control characters"
    ) as raised:
        asyncio.run(call())
    assert "secret" not in str(raised.value)
