"""Retrying's outcome classification, one row per branch: answer in, the item's next state out.

:func:`feedwatch.engine.retrying.outcome` and :func:`~feedwatch.engine.retrying.broken`
are pure functions of the claim, the answer, the feed's settings, the time
and a random source (the backoff's jitter; here ``backoff_base ==
backoff_cap``, so every backoff is exactly 2 s).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from feedwatch import FeedSettings, PermanentError, RetryableError
from feedwatch.engine import retrying
from feedwatch.processors.base import Result
from feedwatch.store.records import Claimed, ItemOutcome

pytestmark = pytest.mark.unit
NOW = datetime(2026, 1, 1)
#: An item at gate 3, claimed for its second attempt, after one failure and one poll.
CLAIMED = Claimed(
    pk=11,
    id="i",
    gate=3,
    version=7,
    attempt=2,
    failures=1,
    polls=1,
    data=b"{}",
    content_type="application/json",
)
SETTINGS = FeedSettings(
    max_retries=3, backoff_base=2, backoff_cap=2, poll_delay=5, poll_limit=3, max_item_bytes=100
)


@dataclass(frozen=True)
class Expected:
    kind: str
    status: str
    gate: int = 3
    failures: int = 1
    polls: int = 1
    delay: float = 0.0
    error: str | None = None  # a part of the error, or None for no error


class _Treacherous(Result):
    """A Result whose every attribute raises."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} here")


def _check(outcome: ItemOutcome, expected: Expected) -> None:
    seen = (outcome.kind, outcome.status, outcome.gate, outcome.failures, outcome.polls)
    assert seen == (expected.kind, expected.status, expected.gate, expected.failures, expected.polls)
    assert outcome.next_attempt_at == NOW + timedelta(seconds=expected.delay)
    assert (outcome.pk, outcome.partition_pk, outcome.version, outcome.attempt) == (11, 5, 7, 2), "the fence"
    if expected.error is None:
        assert outcome.error is None
    else:
        assert outcome.error is not None and expected.error in outcome.error


@pytest.mark.parametrize(
    ("answer", "settings", "expected"),
    [
        pytest.param(Result.complete(), SETTINGS, Expected("complete", "complete"), id="done"),
        pytest.param(
            Result(done=True, gate=4), SETTINGS, Expected("complete", "complete", gate=4), id="done at a gate"
        ),
        pytest.param(
            Result.wait_at(5),
            SETTINGS,
            Expected("gate", "available", gate=5, failures=0, polls=0),
            id="moved on",
        ),
        pytest.param(Result.poll(), SETTINGS, Expected("poll", "available", polls=2, delay=5), id="poll"),
        pytest.param(
            Result.poll(),
            FeedSettings(poll_limit=1),
            Expected("fail", "failed", polls=2, error="still not done after 1 polls at gate 3 (poll_limit)"),
            id="poll limit passed",
        ),
        pytest.param(
            Result.wait_at(2),
            SETTINGS,
            Expected("fail", "failed", error="lower than the item's gate 3"),
            id="gate moved backwards",
        ),
        pytest.param(
            Result(done="yes"),  # type: ignore[arg-type]
            SETTINGS,
            Expected("retry", "available", failures=2, delay=2, error="done must be True or False"),
            id="breaks the contract",
        ),
        pytest.param(
            Result.complete({"x": object()}),
            SETTINGS,
            Expected("retry", "available", failures=2, delay=2, error="cannot be stored as JSON"),
            id="data not JSON",
        ),
        pytest.param(
            Result.complete("x" * 200),
            SETTINGS,
            Expected("fail", "failed", error="over the feed's limit of 100 bytes (max_item_bytes)"),
            id="data too large",
        ),
        pytest.param(
            PermanentError("bad input"),
            SETTINGS,
            Expected("fail", "failed", error="bad input"),
            id="permanent",
        ),
        pytest.param(
            RetryableError("busy", delay=30),
            SETTINGS,
            Expected("delay", "available", delay=30, error="busy"),
            id="retry after a given delay (no failure counted)",
        ),
        pytest.param(
            ValueError("boom"),
            SETTINGS,
            Expected("retry", "available", failures=2, delay=2, error="ValueError: boom"),
            id="failure within max_retries",
        ),
        pytest.param(
            ValueError("boom"),
            FeedSettings(max_retries=1),
            Expected("fail", "failed", failures=2, error="gave up after 2 failed attempts (max_retries=1)"),
            id="failure past max_retries",
        ),
        pytest.param(
            ValueError("boom"),
            FeedSettings(max_retries=-1, backoff_base=2, backoff_cap=2),
            Expected("retry", "available", failures=2, delay=2, error="ValueError: boom"),
            id="retries forever",
        ),
        pytest.param(
            _Treacherous(),
            SETTINGS,
            Expected("retry", "available", failures=2, delay=2, error="cannot use the processor's answer"),
            id="an answer that raises",
        ),
    ],
)
def test_outcome(answer: Result | BaseException, settings: FeedSettings, expected: Expected) -> None:
    _check(retrying.outcome(5, CLAIMED, answer, settings=settings, now=NOW, rng=random.Random(1)), expected)


@pytest.mark.parametrize(
    ("settings", "permanent", "expected"),
    [
        pytest.param(
            SETTINGS, False, Expected("retry", "available", failures=2, delay=2, error="why"), id="retried"
        ),
        pytest.param(SETTINGS, True, Expected("fail", "failed", failures=2, error="why"), id="permanent"),
        pytest.param(
            FeedSettings(max_retries=0),
            False,
            Expected("fail", "failed", failures=2, error="gave up after 2 failed attempts"),
            id="past max_retries",
        ),
    ],
)
def test_broken(settings: FeedSettings, permanent: bool, expected: Expected) -> None:
    _check(retrying.broken(5, CLAIMED, "why", settings, NOW, permanent=permanent), expected)
