"""From a processor's answer (or failure) to the item's next state.

Pure functions: the dispatcher calls :func:`outcome` for each answer and the
store writes the result in batches.

Nothing an answer holds may escape as an exception: :func:`outcome` turns any
failure to build the next state (data JSON cannot encode, a gate the database
cannot store, a delay so large the date overflows) into that item's retry or
failure, with an error that names the cause. Every delay (``Retry-After``,
``RetryableError(delay=...)``, the backoff, the poll delay) is clamped to
:data:`MAX_DELAY`.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from feedwatch.errors import PermanentError, RetryableError
from feedwatch.processors.base import UNSET, Result, encode_data
from feedwatch.processors.contract import check_result
from feedwatch.settings import MAX_DELAY, FeedSettings
from feedwatch.store.records import Claimed, ItemOutcome


def clamp_delay(seconds: Any) -> float:
    """``seconds`` as a delay within [0, :data:`MAX_DELAY`] (not a number, NaN: 0)."""
    try:
        value = float(seconds)
    except OverflowError:  # an int past float's range
        return MAX_DELAY if seconds > 0 else 0.0
    except (TypeError, ValueError):
        return 0.0
    if math.isnan(value):
        return 0.0
    return min(max(value, 0.0), MAX_DELAY)


def later(now: datetime, seconds: Any) -> datetime:
    """``now`` plus a clamped delay: never overflows."""
    return now + timedelta(seconds=clamp_delay(seconds))


def backoff(failures: int, settings: FeedSettings, rng: random.Random) -> float:
    """Seconds before retry number ``failures``: exponential, jittered, within [base, cap]."""
    base, cap = clamp_delay(settings.backoff_base), clamp_delay(settings.backoff_cap)
    exponent = min(max(failures - 1, 0), 64)  # 2**64 times any base is past MAX_DELAY
    ceiling = min(cap, base * 2.0**exponent)
    return clamp_delay(rng.uniform(max(base, ceiling / 2), max(base, ceiling)))


def outcome(
    partition_pk: int,
    claimed: Claimed,
    answer: Result | BaseException,
    *,
    settings: FeedSettings,
    now: datetime,
    rng: random.Random,
) -> ItemOutcome:
    """The item's next state after one processor call; never raises for what the answer holds."""
    base = _claim_fields(partition_pk, claimed, now, failures=claimed.failures)
    try:
        return _next_state(answer, base, claimed, settings=settings, now=now, rng=rng)
    except Exception as error:
        # The answer itself is the trouble (e.g. a Result subclass whose
        # attributes raise): a failure of the item, counted and retried.
        return broken(
            partition_pk, claimed, f"cannot use the processor's answer: {describe(error)}", settings, now
        )


def broken(
    partition_pk: int,
    claimed: Claimed,
    message: str,
    settings: FeedSettings,
    now: datetime,
    *,
    permanent: bool = False,
) -> ItemOutcome:
    """A counted failure with ``message``, built from the claim alone (so it cannot fail again).

    ``permanent``: the item fails now, whatever ``max_retries`` allows.
    """
    failures = claimed.failures + 1
    base = _claim_fields(partition_pk, claimed, now, failures=failures)
    if permanent:
        return _fail(base, message)
    if settings.max_retries != -1 and failures > settings.max_retries:
        return _fail(
            base,
            f"gave up after {failures} failed attempts (max_retries={settings.max_retries}); "
            f"last error: {message}",
        )
    delay = clamp_delay(settings.backoff_base)
    return ItemOutcome(
        kind="retry", status="available", error=message, **{**base, "next_attempt_at": later(now, delay)}
    )


def _claim_fields(partition_pk: int, claimed: Claimed, now: datetime, *, failures: int) -> dict[str, Any]:
    """The outcome's fields as the claim left them (the write's version check needs them), due ``now``."""
    return {
        "pk": claimed.pk,
        "partition_pk": partition_pk,
        "version": claimed.version,
        "attempt": claimed.attempt,
        "gate": claimed.gate,
        "failures": failures,
        "polls": claimed.polls,
        "next_attempt_at": now,
    }


def _next_state(
    answer: Result | BaseException,
    base: dict[str, Any],
    claimed: Claimed,
    *,
    settings: FeedSettings,
    now: datetime,
    rng: random.Random,
) -> ItemOutcome:
    """:func:`outcome`'s rule; ``base`` holds the claim's fields, and is updated (the data)."""
    if isinstance(answer, BaseException):
        return _failure(base, claimed, answer, settings=settings, now=now, rng=rng)
    try:
        check_result(answer)  # a Processor of the user's own may build any Result
    except RetryableError as error:
        return _failure(base, claimed, error, settings=settings, now=now, rng=rng)
    if answer.data is not UNSET:
        try:
            data = encode_data(answer.data)
        except (TypeError, ValueError, OverflowError, RecursionError) as error:
            reason = RetryableError(f"the result data cannot be stored as JSON: {describe(error)}")
            return _failure(base, claimed, reason, settings=settings, now=now, rng=rng)
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
        **{**base, "polls": polls, "next_attempt_at": later(now, settings.poll_delay)},
    )


def _failure(
    base: dict[str, Any],
    claimed: Claimed,
    error: BaseException,
    *,
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
            **{**base, "next_attempt_at": later(now, error.delay)},
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
        **{**base, "failures": failures, "next_attempt_at": later(now, delay)},
    )


def _fail(base: dict[str, Any], message: str) -> ItemOutcome:
    return ItemOutcome(kind="fail", status="failed", error=message, **base)


def describe(error: BaseException) -> str:
    """A one-line message for an item's error column."""
    try:
        text = str(error)
    except Exception:  # an exception whose __str__ raises still gets a message
        text = ""
    if isinstance(error, RetryableError | PermanentError):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
