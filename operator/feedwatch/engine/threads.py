"""Where the engine's parts run blocking store calls, and what they do when the database is away.

The watcher owns the threads (a small pool for claims, commits and
checkpoints; one thread of its own for leases, so a claim blocked on a lock
never delays a renewal) and hands each part the ``Offload`` it should use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy.exc import DBAPIError

from feedwatch.engine.clock import Clock
from feedwatch.errors import DatabaseUnavailableError
from feedwatch.observability.actions import Action

T = TypeVar("T")


class Offload(Protocol):
    """Run a blocking call on a thread and await its result."""

    def __call__(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Awaitable[T]: ...


class DatabaseTrouble:
    """Tells database trouble (retried) from bugs (fatal), and logs it at most every 5 s.

    Every loop that talks to the database (lease keeping, claiming, committing)
    meets an error the same way: :meth:`outlast` it, then go round again.
    """

    def __init__(self, *, log: logging.LoggerAdapter[logging.Logger], clock: Clock, pause: float) -> None:
        self._log = log
        self._clock = clock
        self._pause = pause
        self._logged = 0.0

    async def outlast(self, error: Exception) -> None:
        """Re-raise a bug; for database trouble, log it and wait ``pause`` before the caller retries."""
        if not self.is_trouble(error):
            raise error
        self.report(error)
        await asyncio.sleep(self._pause)

    @staticmethod
    def is_trouble(error: BaseException) -> bool:
        return isinstance(error, DatabaseUnavailableError | DBAPIError)

    def report(self, error: BaseException) -> None:
        mono = self._clock.monotonic()
        if mono - self._logged > 5:
            self._logged = mono
            self._log.warning(
                "database trouble, retrying: %s",
                str(error).splitlines()[0],
                extra={"action": Action.DATABASE_UNAVAILABLE},
            )
