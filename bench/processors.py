"""In-process processors that benchmark watchers load with ``--processor``.

``noop`` does no work: an item at a gate below ``BENCH_GATES - 1`` waits at the
next gate (fan-in), at the last gate it completes. So a partition of N items
costs N processor calls per gate, and nothing but feedwatch itself.

Each watcher process writes the wall-clock time of its first call to
``$BENCH_MARK_DIR/<pid>.first`` (once: no cost on the hot path), so the
benchmark measures from the first dispatch even with history off.
"""

from __future__ import annotations

import asyncio
import os
import time

from feedwatch import Item, Result

_LAST_GATE = int(os.environ.get("BENCH_GATES", "2")) - 1
_DELAY = float(os.environ.get("BENCH_DELAY", "0"))
_marked = False


def _mark() -> None:
    global _marked  # noqa: PLW0603 - one flag per process
    _marked = True
    directory = os.environ.get("BENCH_MARK_DIR")
    if directory:
        with open(os.path.join(directory, f"{os.getpid()}.first"), "w") as f:
            f.write(repr(time.time()))


async def noop(item: Item) -> Result:
    """Gate g -> g + 1 until the last gate, then done. No data written back."""
    if not _marked:
        _mark()
    if item.gate < _LAST_GATE:
        return Result.wait_at(item.gate + 1)
    return Result.complete()


async def sleepy(item: Item) -> Result:
    """As :func:`noop`, after ``BENCH_DELAY`` seconds (keeps a failover run busy)."""
    if not _marked:
        _mark()
    if _DELAY:
        await asyncio.sleep(_DELAY)
    if item.gate < _LAST_GATE:
        return Result.wait_at(item.gate + 1)
    return Result.complete()
