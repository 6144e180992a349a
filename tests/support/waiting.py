"""Waiting for a condition in a test: one polling loop, :func:`feedwatch.testing.wait_for`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from feedwatch.testing import wait_for

T = TypeVar("T")


def wait_until(
    check: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    interval: float = 0.25,
    message: str | Callable[[], str] = "condition",
) -> T:
    """Poll ``check`` until it returns a truthy value, and return that value.

    Unlike :func:`~feedwatch.testing.wait_for`, an exception raised by ``check`` counts as
    "not yet" (an API object not created yet, a process still starting); the last one is
    named in the failure if ``timeout`` seconds pass.
    """
    last_error: list[Exception] = []

    def attempt() -> T | None:
        try:
            return check()
        except Exception as exc:  # not yet: retried until the deadline
            last_error[:] = [exc]
            return None

    def describe() -> str:
        text = message() if callable(message) else message
        return f"{text}; last error: {last_error[0]!r}" if last_error else text

    found: T = wait_for(attempt, timeout=timeout, interval=interval, message=describe)
    return found
