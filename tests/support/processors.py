"""In-process processors that watcher subprocesses load with --processor.

They record to files named by environment variables, so the test process can
read what every watcher process did. Appends of one short line are atomic.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from feedwatch import Item, PermanentError, Result, RetryableError


def _record(kind: str, item: Item, **extra: Any) -> None:
    path = os.environ.get("FEEDWATCH_TEST_RECORD")
    if not path:
        return
    line = json.dumps({"kind": kind, "p": item.partition, "i": item.id, "g": item.gate,
                       "a": item.attempt, "pid": os.getpid(), "t": time.time(), **extra})  # fmt: skip
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _delay() -> float:
    return float(os.environ.get("FEEDWATCH_TEST_DELAY", "0"))


async def gates(item: Item) -> Result:
    """Gate 0 -> 1 -> 2 -> done, recording every call; optional delay per call."""
    _record("call", item)
    if _delay():
        await asyncio.sleep(_delay())
    last = int(os.environ.get("FEEDWATCH_TEST_LAST_GATE", "2"))
    if item.gate < last:
        return Result.wait_at(item.gate + 1, {"seen": item.gate})
    return Result.complete({"seen": item.gate})


async def slow(item: Item) -> Result:
    """Complete after the delay; records calls."""
    _record("call", item)
    await asyncio.sleep(_delay() or 0.2)
    return Result.complete()


async def suicidal(item: Item) -> Result:
    """Kill the whole watcher process on the poison item; complete everything else."""
    _record("call", item)
    if item.id == os.environ.get("FEEDWATCH_TEST_POISON", "poison"):
        os._exit(17)
    if _delay():
        await asyncio.sleep(_delay())
    return Result.complete()


async def flaky(item: Item) -> Result:
    """Fail twice then succeed for items named flaky*, fail for doomed*, else complete."""
    _record("call", item)
    if item.id.startswith("flaky") and item.attempt <= 2:
        raise RetryableError(f"flaky failure {item.attempt}")
    if item.id.startswith("doomed"):
        raise PermanentError("doomed item")
    return Result.complete()
