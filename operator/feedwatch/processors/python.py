"""The in-process processor: a plain Python callable, sync or async."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

from feedwatch.errors import ConfigurationError, PermanentError, RetryableError
from feedwatch.processors.base import Item, Result
from feedwatch.processors.contract import parse_reply


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
    """Accept a :class:`Result`, ``None``/``True`` (done), or a handler-contract dict."""
    if isinstance(value, Result):
        return value
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

    Async callables are cancelled at the deadline. Sync callables run in a
    thread, which Python cannot cancel: past the deadline the item is retried
    and the thread is left to finish on its own.
    """

    def __init__(self, func: Callable[[Item], Any], *, timeout: float = 30.0) -> None:
        self.func = func
        self.timeout = timeout
        self._is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
            getattr(func, "__call__", None)  # noqa: B004
        )

    async def process(self, item: Item) -> Result:
        try:
            if self._is_async:
                value = await asyncio.wait_for(self.func(item), self.timeout)
            else:
                value = await asyncio.wait_for(asyncio.to_thread(self.func, item), self.timeout)
        except TimeoutError:
            raise RetryableError(f"the processor did not answer within {self.timeout:g} s") from None
        return coerce_result(value)
