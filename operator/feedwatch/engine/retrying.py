"""From a processor's answer (or failure) to the item's next state.

Pure functions: the dispatcher calls :func:`outcome` for each answer and the
store writes the result in batches.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from feedwatch.errors import PermanentError, RetryableError
from feedwatch.processors.base import UNSET, Result, encode_data
from feedwatch.settings import FeedSettings
from feedwatch.store.records import Claimed, ItemOutcome


def backoff(failures: int, settings: FeedSettings, rng: random.Random) -> float:
    """Seconds before retry number ``failures``: exponential, jittered, within [base, cap]."""
    ceiling = min(settings.backoff_cap, settings.backoff_base * 2 ** max(failures - 1, 0))
    return rng.uniform(max(settings.backoff_base, ceiling / 2), ceiling)


def outcome(
    partition_pk: int,
    claimed: Claimed,
    answer: Result | BaseException,
    settings: FeedSettings,
    now: datetime,
    rng: random.Random,
) -> ItemOutcome:
    """The item's next state after one processor call."""
    base: dict[str, Any] = {
        "pk": claimed.pk,
        "partition_pk": partition_pk,
        "version": claimed.version,
        "attempt": claimed.attempt,
        "gate": claimed.gate,
        "failures": claimed.failures,
        "polls": claimed.polls,
        "next_attempt_at": now,
    }
    if isinstance(answer, BaseException):
        return _failure(base, claimed, answer, settings, now, rng)
    if answer.data is not UNSET:
        data = encode_data(answer.data)
        if data is not None and len(data) > settings.max_item_bytes:
            return _fail(
                base,
                f"the result data is {len(data)} bytes, over the feed's limit of "
                f"{settings.max_item_bytes} bytes (max_item_bytes)",
            )
        base.update(set_data=True, data=data)
    gate = claimed.gate if answer.gate is None else answer.gate
    if gate < claimed.gate:
        return _fail(
            base,
            f"the processor answered gate {gate}, lower than the item's gate {claimed.gate}: "
            "a handler bug (gates only move forward)",
        )
    if answer.done:
        return ItemOutcome(kind="complete", status="complete", **{**base, "gate": gate})
    if gate > claimed.gate:
        return ItemOutcome(
            kind="gate", status="available", error=None, **{**base, "gate": gate, "polls": 0, "failures": 0}
        )
    polls = claimed.polls + 1
    if settings.poll_limit and polls > settings.poll_limit:
        return _fail(
            {**base, "polls": polls},
            f"still not done after {settings.poll_limit} polls at gate {gate} (poll_limit)",
        )
    return ItemOutcome(
        kind="poll",
        status="available",
        **{**base, "polls": polls, "next_attempt_at": now + timedelta(seconds=settings.poll_delay)},
    )


def _failure(
    base: dict[str, Any],
    claimed: Claimed,
    error: BaseException,
    settings: FeedSettings,
    now: datetime,
    rng: random.Random,
) -> ItemOutcome:
    message = describe(error)
    if isinstance(error, PermanentError):
        return _fail(base, message)
    if isinstance(error, RetryableError) and error.delay is not None:
        return ItemOutcome(
            kind="delay",
            status="available",
            error=message,
            **{**base, "next_attempt_at": now + timedelta(seconds=max(error.delay, 0.0))},
        )
    failures = claimed.failures + 1
    if settings.max_retries != -1 and failures > settings.max_retries:
        return _fail(
            {**base, "failures": failures},
            f"gave up after {failures} failed attempts (max_retries={settings.max_retries}); "
            f"last error: {message}",
        )
    delay = backoff(failures, settings, rng)
    return ItemOutcome(
        kind="retry",
        status="available",
        error=message,
        **{**base, "failures": failures, "next_attempt_at": now + timedelta(seconds=delay)},
    )


def _fail(base: dict[str, Any], message: str) -> ItemOutcome:
    return ItemOutcome(kind="fail", status="failed", error=message, **base)


def describe(error: BaseException) -> str:
    """A one-line message for an item's error column."""
    if isinstance(error, RetryableError | PermanentError):
        return str(error)
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
