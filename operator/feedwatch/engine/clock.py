"""Database time, read through the local monotonic clock.

Lease expiry is judged by the database's clock, never a watcher's wall clock:
the clock samples the database's time and then advances it with
``time.monotonic()``, so a skewed or jumping wall clock changes nothing.
``Watcher(clock=...)`` takes any other object with the :class:`Clock` methods
(the unit tests of leasing pass a fake one that they move by hand).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """What the engine asks of a clock: database time, and a monotonic one to measure with."""

    def sync(self) -> None:
        """Re-read the database's time (called at each renewal)."""

    def now(self) -> datetime:
        """The database's time now (naive UTC)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (trust windows and deadlines)."""


class DatabaseClock:
    def __init__(self, read_database_time: Callable[[], datetime]) -> None:
        self._read = read_database_time
        #: The database's time at a monotonic instant; one tuple, so that a
        #: reader on another thread never pairs a new time with an old instant.
        self._base: tuple[datetime, float] | None = None

    def sync(self) -> None:
        """Sample the database's time (halfway through the round trip)."""
        before = time.monotonic()
        value = self._read()
        after = time.monotonic()
        # The value was read about halfway through: it is the time at ``after - rtt/2``.
        self._base = (value, (before + after) / 2)

    def now(self) -> datetime:
        """The database's time now (naive UTC)."""
        if self._base is None:
            self.sync()
        base = self._base
        if base is None:
            raise RuntimeError("the database clock was never read")
        value, at = base
        return value + timedelta(seconds=time.monotonic() - at)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
