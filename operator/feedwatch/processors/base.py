"""The processor protocol and the values that cross it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


class _Unset:
    """Marks a result that leaves the item's data unchanged."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass(frozen=True)
class Item:
    """One item as a processor sees it."""

    feed: str
    partition: str
    id: str
    gate: int
    attempt: int
    data: bytes | None
    content_type: str

    def json(self) -> Any:
        """The data decoded as JSON (``None`` for no data)."""
        return None if self.data is None else json.loads(self.data)


@dataclass(frozen=True)
class Result:
    """What a processor answers for an item.

    ``done``: the item is complete. Not done with a higher ``gate``: the item
    waits at that gate. Not done at the same gate: call again after the feed's
    poll delay. ``data``: the item's new data (``UNSET`` keeps it; ``None``
    stores null; bytes are stored as they are; anything else as JSON).
    To fail, raise :class:`~feedwatch.errors.RetryableError` or
    :class:`~feedwatch.errors.PermanentError`.
    """

    done: bool = True
    gate: int | None = None
    data: Any = UNSET

    @classmethod
    def complete(cls, data: Any = UNSET) -> Result:
        return cls(done=True, data=data)

    @classmethod
    def wait_at(cls, gate: int, data: Any = UNSET) -> Result:
        """Not done: continue at ``gate`` once every item of the partition reached it."""
        return cls(done=False, gate=gate, data=data)

    @classmethod
    def poll(cls, data: Any = UNSET) -> Result:
        """Not done yet: call again after the feed's poll delay."""
        return cls(done=False, data=data)


@runtime_checkable
class Processor(Protocol):
    """Processes one item. Raise ``RetryableError`` or ``PermanentError`` to fail it."""

    async def process(self, item: Item) -> Result: ...


def encode_data(value: Any) -> bytes | None:
    """Bytes as they are, ``None`` as null, anything else as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=False).encode()
