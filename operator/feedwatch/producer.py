"""The producer API: :class:`Feed` enqueues work, reads it back, and steers it."""

from __future__ import annotations

import hashlib
import json
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

from feedwatch.errors import ConfigurationError, FeedwatchError, PayloadError
from feedwatch.settings import FeedSettings
from feedwatch.store import Store
from feedwatch.store.enqueueing import EnqueueResult, NewItem
from feedwatch.store.records import HistoryRow, ItemRow, PartitionRow, PartitionSummary
from feedwatch.store.schema import MAX_GATE

JSON = "application/json"
OCTETS = "application/octet-stream"
#: Longest feed, partition and item id (the id columns are 200 characters).
MAX_ID = 200
#: Longest content type (the column is 200 characters).
MAX_CONTENT_TYPE = 200
#: The longest ``older_than`` of a purge (100 years): any longer cannot be a date.
MAX_AGE = timedelta(days=36500)


#: Items' JSON form: compact, and no NaN or infinity (not JSON). One encoder for every
#: item: ``json.dumps`` with options builds a new one per call.
_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _store(target: Store | str) -> Store:
    return Store.open(target) if isinstance(target, str) else target


def _control_character(text: str) -> str | None:
    """A description of the first control character in ``text``, or None."""
    if text.isprintable():  # no control character (C code: the usual case costs no loop)
        return None
    for position, char in enumerate(text):
        if unicodedata.category(char) == "Cc":
            return f"U+{ord(char):04X} at position {position}"
    return None


def _check_id(kind: str, value: Any) -> str:
    """A feed, partition or item id; refused unless it can travel as an HTTP header value.

    The HTTP processor sends the ids as ``X-Feed-Name``, ``X-Feed-Partition``
    and ``X-Feed-Item``: a control character (a newline, NUL, ...) cannot be
    sent there, so such an id would fail on every attempt.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise PayloadError(
            f"{kind} id must be a non-empty string of at most {MAX_ID} characters, not {_shown(value)}"
        )
    bad = _control_character(value)
    if bad:
        raise PayloadError(
            f"{kind} id {value!r} contains a control character ({bad}); ids are sent as HTTP "
            "headers and may not contain control characters: remove or encode it; nothing was enqueued"
        )
    return value


def _shown(value: Any) -> str:
    """``value`` for an error message, cut short."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_gate(gate: Any) -> int:
    """A gate given by a user: an integer (not a bool) from 0 to :data:`MAX_GATE`."""
    if type(gate) is not int or not 0 <= gate <= MAX_GATE:
        raise PayloadError(f"gate must be an integer from 0 to {MAX_GATE}, not {_shown(gate)}")
    return gate


def check_content_type(content_type: Any) -> str | None:
    """A content type given by a user (None: the default), sent as the ``Content-Type`` header."""
    if content_type is None:
        return None
    if not isinstance(content_type, str) or not content_type or len(content_type) > MAX_CONTENT_TYPE:
        raise PayloadError(
            f"content type must be a non-empty string of at most {MAX_CONTENT_TYPE} characters, "
            f"not {_shown(content_type)}"
        )
    bad = _control_character(content_type)
    if bad:
        raise PayloadError(
            f"content type {content_type!r} contains a control character ({bad}); "
            "it is sent as the Content-Type header"
        )
    return content_type


def utc_naive(when: datetime) -> datetime:
    """``when`` as naive UTC (the database's form); an aware time keeps its instant."""
    if not isinstance(when, datetime):
        raise PayloadError(f"not_before must be a datetime, not {_shown(when)}")
    if when.tzinfo is None or when.utcoffset() is None:
        return when
    return when.astimezone(UTC).replace(tzinfo=None)


def encode_item(item_id: str, data: Any, content_type: str | None, limit: int) -> NewItem:
    """Validate and encode one item; the error names the item."""
    _check_id("item", item_id)
    check_content_type(content_type)
    if isinstance(data, bytes | bytearray | memoryview):
        raw: bytes | None = bytes(data)
        ctype = content_type or OCTETS
    else:
        try:
            raw = _JSON.encode(data).encode()
        except (TypeError, ValueError) as e:
            raise PayloadError(
                f"item {item_id!r}: data must be bytes or JSON-serialisable ({e}); nothing was enqueued"
            ) from None
        ctype = content_type or JSON
    if raw is not None and len(raw) > limit:
        raise PayloadError(
            f"item {item_id!r} is {len(raw)} bytes, over the feed's limit of {limit} bytes "
            "(max_item_bytes); nothing was enqueued"
        )
    digest = hashlib.sha256(ctype.encode() + b"\0" + (raw or b"")).hexdigest()
    return NewItem(item_id, raw, ctype, digest)


class Feed:
    """A named stream of work in a database: enqueue, read back, steer.

    ``Feed.create(url, "resumes")`` creates the feed (or opens it);
    ``Feed(url, "resumes")`` opens an existing one.
    """

    def __init__(self, store: Store | str, name: str) -> None:
        self.store = _store(store)
        self.name = name
        self.store.load_feed(name)  # raises FeedNotFoundError with a hint

    @classmethod
    def create(
        cls, store: Store | str, name: str, settings: FeedSettings | None = None, **changes: Any
    ) -> Feed:
        """Create the feed with ``settings`` (and keyword changes); open it if it exists."""
        st = _store(store)
        _check_id("feed", name)
        settings = _settings(settings or FeedSettings(), changes)
        st.save_feed(name, settings, now=st.now(), create_only=True)
        return cls(st, name)

    @property
    def settings(self) -> FeedSettings:
        return self.store.load_feed(self.name)

    def update(self, **changes: Any) -> FeedSettings:
        """Change feed settings; every watcher picks them up at its next renewal."""
        settings = _settings(self.settings, changes)
        self.store.save_feed(self.name, settings, now=self.store.now(), create_only=False)
        return settings

    def pause(self) -> None:
        self.update(paused=True)

    def resume(self) -> None:
        self.update(paused=False)

    # -- enqueue ------------------------------------------------------------

    def enqueue(
        self,
        partition: str,
        items: Mapping[str, Any] | Iterable[tuple[str, Any]],
        *,
        gate: int | None = None,
        not_before: datetime | None = None,
        content_type: str | None = None,
    ) -> EnqueueResult:
        """Add items (``{id: data}`` or ``[(id, data), ...]``) to a partition, creating it if new.

        ``gate`` defaults to the partition's current gate; a lower one is refused.
        ``not_before`` (naive UTC, or aware in any zone) delays the items.
        Idempotent: the same id and payload again is a no-op; a different
        payload raises ``ConflictError``. Everything is validated before
        anything is written: ids without control characters (they travel as
        HTTP headers), a gate from 0 to :data:`MAX_GATE`, a content type of at
        most :data:`MAX_CONTENT_TYPE` characters.
        """
        _check_id("partition", partition)
        if gate is not None:
            check_gate(gate)
        check_content_type(content_type)
        if not_before is not None:
            not_before = utc_naive(not_before)
        settings = self.settings
        limit = settings.max_item_bytes
        pairs = items.items() if isinstance(items, Mapping) else items
        encoded = [encode_item(i, d, content_type, limit) for i, d in pairs]
        seen: set[str] = set()
        for item in encoded:
            if item.id in seen:
                raise PayloadError(f"item {item.id!r} appears twice in one enqueue; nothing was enqueued")
            seen.add(item.id)
        now = self.store.now()
        due = max(now, not_before) if not_before else now
        return self.store.enqueue(
            self.name, partition, encoded, gate=gate, due=due, now=now, history=settings.history
        )

    # -- reading ------------------------------------------------------------

    def partition(self, partition: str) -> PartitionRow:
        return self.store.partition(self.name, partition)

    def partitions(self, *, status: str | None = None, limit: int = 1000) -> list[PartitionRow]:
        return self.store.partitions(self.name, status=status, limit=limit)

    def items(
        self,
        partition: str,
        *,
        gate: int | None = None,
        status: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[ItemRow]:
        """One page of items, oldest first; pass the last row's ``pk`` as ``after`` for the next."""
        pk = self.partition(partition).pk
        return self.store.items(pk, gate=gate, status=status, after=after, limit=limit)

    def iter_items(
        self, partition: str, *, gate: int | None = None, status: str | None = None, page: int = 1000
    ) -> Iterator[ItemRow]:
        """Every matching item, read page by page."""
        pk = self.partition(partition).pk
        after: int | None = None
        while True:
            rows = self.store.items(pk, gate=gate, status=status, after=after, limit=page)
            yield from rows
            if len(rows) < page:
                return
            after = rows[-1].pk

    def status(self, partition: str) -> PartitionSummary:
        """Counts per status and gate, and the failed items with their errors."""
        return self.store.summary(self.name, partition)

    def history(self, partition: str) -> list[HistoryRow]:
        return self.store.history(self.partition(partition).pk)

    def backlog(self) -> int:
        return self.store.backlog(self.name, self.store.now())

    def wait(self, partition: str, *, timeout: float | None = None, interval: float = 0.2) -> PartitionRow:
        """Block until the partition is complete or failed; return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            row = self.partition(partition)
            if row.status in ("complete", "failed"):
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"partition {partition!r} is still {row.status} after {timeout} s")
            time.sleep(interval)

    # -- steering -------------------------------------------------------------

    def retry(self, partition: str | None = None) -> int:
        """Re-drive failed items of one partition (or of the whole feed); returns how many."""
        return self.store.redrive(self.name, partition, now=self.store.now(), history=self.settings.history)

    def set_gate(self, partition: str, gate: int) -> int:
        """Move a partition's gate by hand (manual checkpoint); returns the old gate."""
        check_gate(gate)
        return self.store.move_gate(
            self.name, partition, gate, now=self.store.now(), history=self.settings.history
        )

    def cancel(self, partition: str) -> int:
        return self.store.cancel(self.name, partition, now=self.store.now(), history=self.settings.history)

    def delete(self, partition: str) -> int:
        return self.store.delete_partition(self.name, partition)

    def purge(
        self, older_than: timedelta, *, partitions: bool = True, history: bool = True
    ) -> tuple[int, int]:
        """Delete complete partitions and history older than ``older_than``.

        A partition an enqueue reopens meanwhile is kept (see ``Store.purge``).
        """
        if not isinstance(older_than, timedelta) or older_than < timedelta(0):
            raise FeedwatchError(f"older_than must be a timedelta of 0 or more, not {_shown(older_than)}")
        if older_than > MAX_AGE:
            raise FeedwatchError(
                f"older_than {older_than.days} days is longer than feedwatch keeps anything "
                f"({MAX_AGE.days} days at most)"
            )
        return self.store.purge(
            self.name, self.store.now() - older_than, partitions=partitions, history=history
        )


def _settings(base: FeedSettings, changes: Mapping[str, Any]) -> FeedSettings:
    known = {f.name for f in fields(FeedSettings)}
    unknown = set(changes) - known
    if unknown:
        raise ConfigurationError(
            f"unknown feed setting(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    try:
        return base.replace(**changes)
    except TypeError as e:
        raise FeedwatchError(str(e)) from None
