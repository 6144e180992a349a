"""The one rule every database loop of the engine follows: wait out trouble, die of bugs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from sqlalchemy.exc import OperationalError

from feedwatch.engine.threads import DatabaseTrouble
from feedwatch.errors import DatabaseUnavailableError
from feedwatch.observability.logging import FeedLogger

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def monotonic(self) -> float:
        return self.t


def trouble(clock: Clock) -> DatabaseTrouble:
    log = FeedLogger(logging.getLogger("feedwatch.engine"), {"feed": "f", "owner": "w"})
    return DatabaseTrouble(log=log, clock=clock, pause=0.05)  # type: ignore[arg-type]  # monotonic is all it reads


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("SELECT 1", {}, Exception("(2013, 'Lost connection')")),
        DatabaseUnavailableError("the database did not answer"),
    ],
    ids=["driver error", "unavailable"],
)
def test_trouble_is_logged_and_waited_out(error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    rule = trouble(clock)
    loop = asyncio.new_event_loop()
    try:
        started = loop.time()
        loop.run_until_complete(rule.outlast(error))
        waited = loop.time() - started
        loop.run_until_complete(rule.outlast(error))  # within 5 s: not logged again
        clock.t += 6
        loop.run_until_complete(rule.outlast(error))
    finally:
        loop.close()
    assert waited >= 0.04
    logged = [r for r in caplog.records if getattr(r, "action", None) == "database_unavailable"]
    assert len(logged) == 2


def test_a_bug_is_raised_at_once_not_retried() -> None:
    rule = trouble(Clock())
    bug = KeyError("pk")
    with pytest.raises(KeyError) as raised:
        asyncio.run(rule.outlast(bug))
    assert raised.value is bug
