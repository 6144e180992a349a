"""Database time, read through the local monotonic clock.

Lease expiry is judged by the database's clock, never a watcher's wall clock:
the clock samples the database's time and then advances it with
``time.monotonic()``, so a skewed or jumping wall clock changes nothing.
Tests inject a clock of their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta


class DatabaseClock:
    def __init__(self, read_database_time: Callable[[], datetime]) -> None:
        self._read = read_database_time
        self._base: datetime | None = None
        self._base_mono = 0.0

    def sync(self) -> None:
        """Sample the database's time (halfway through the round trip)."""
        before = time.monotonic()
        value = self._read()
        after = time.monotonic()
        self._base = value - timedelta(seconds=(after - before) / 2)
        self._base_mono = before

    def now(self) -> datetime:
        """The database's time now (naive UTC)."""
        if self._base is None:
            self.sync()
        base = self._base
        if base is None:
            raise RuntimeError("the database clock was never read")
        return base + timedelta(seconds=time.monotonic() - self._base_mono)

    @staticmethod
    def monotonic() -> float:
        return time.monotonic()
