"""The in-process processor: a plain Python callable, sync or async."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from feedwatch.errors import ConfigurationError, PermanentError, RetryableError
from feedwatch.processors.base import Item, Result
from feedwatch.processors.contract import check_result, parse_reply
from feedwatch.processors.threads import DaemonThreadPool


def load_callable(spec: str) -> Callable[..., Any]:
    """Import ``module:attribute`` (``attribute`` may be dotted)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(f"--processor must look like module:callable, not {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigurationError(f"cannot import {module_name!r} for --processor: {e}") from None
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r}") from None
    if not callable(target):
        raise ConfigurationError(f"{spec!r} is not callable")
    return target  # type: ignore[no-any-return]


def coerce_result(value: Any) -> Result:
    """Accept a :class:`Result`, ``None``/``True`` (done), ``False`` (poll) or a handler-contract dict.

    A :class:`Result` is checked as strictly as a handler's JSON reply
    (:func:`~feedwatch.processors.contract.check_result`).
    """
    if isinstance(value, Result):
        return check_result(value)
    if value is None or value is True:
        return Result.complete()
    if value is False:
        return Result.poll()
    if isinstance(value, dict):
        return parse_reply(value)
    raise PermanentError(
        f"the processor returned {type(value).__name__}; return a Result, a dict, a bool or None"
    )


class CallableProcessor:
    """Runs ``func(item)`` with a deadline.

    Async callables are cancelled at the deadline. Sync callables run on a
    pool of their own, ``concurrency`` daemon threads (never asyncio's
    default pool): a call waits at most ``timeout`` for a free thread, then
    has ``timeout`` to answer. Python cannot cancel a thread, so a call past
    its deadline is retried and its error says that its thread may still be
    running; a thread that never returns keeps its slot (the error of a call
    that could not even start says so) but never keeps the process from
    exiting.
    """

    def __init__(self, func: Callable[[Item], Any], *, timeout: float = 30.0, concurrency: int = 16) -> None:
        self.func = func
        self.timeout = timeout
        self.concurrency = concurrency
        self._is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004
        )
        self._pool: DaemonThreadPool | None = None

    async def process(self, item: Item) -> Result:
        if self._is_async:
            try:
                # A timeout scope, not ``wait_for``: on Python 3.11 that runs the call in
                # a task of its own, a second task per item (5% of a watcher's CPU).
                async with asyncio.timeout(self.timeout):
                    value = await self._guarded(item)
            except TimeoutError:
                raise RetryableError(f"the processor did not answer within {self.timeout:g} s") from None
        else:
            value = await self._in_thread(item)
        return coerce_result(value)

    async def _guarded(self, item: Item) -> Any:
        """The async call, with ``SystemExit``/``KeyboardInterrupt`` made the item's error.

        Raised inside an item's task, either would stop the event
        loop, i.e. the whole watcher, for one item.
        """
        try:
            return await self.func(item)
        except (SystemExit, KeyboardInterrupt) as error:
            raise RetryableError(f"the processor raised {type(error).__name__}: {error}") from None

    async def _in_thread(self, item: Item) -> Any:
        if self._pool is None:
            self._pool = DaemonThreadPool(self.concurrency)
        pool = self._pool
        loop = asyncio.get_running_loop()
        started = asyncio.Event()

        def run() -> Any:
            loop.call_soon_threadsafe(started.set)
            return self.func(item)

        future = pool.submit(run)
        try:
            await asyncio.wait_for(started.wait(), self.timeout)
        except TimeoutError:
            if future.cancel():
                raise RetryableError(
                    f"the processor did not start within {self.timeout:g} s: all {pool.size} of its "
                    f"threads (concurrency) are busy, {pool.busy} with calls that have not returned "
                    "(a sync processor that hangs?)"
                ) from None
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
        except TimeoutError:
            raise RetryableError(
                f"the processor did not answer within {self.timeout:g} s (timed out; its thread "
                "may still be running: Python cannot stop a thread)"
            ) from None

    async def close(self) -> None:
        """Stop the thread pool without waiting for calls that hang (daemon threads)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
