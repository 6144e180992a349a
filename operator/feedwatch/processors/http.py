"""The HTTP processor: POST each item to a handler service (gofeed-compatible).

Request: the item's data as the body with its content type, and the headers
``X-Feed-Name``, ``X-Feed-Partition``, ``X-Feed-Item``, ``X-Feed-Gate``,
``X-Feed-Attempt`` (plus any configured extra headers, never logged).
Reply: see :mod:`feedwatch.processors.contract`. Anything else (a non-2xx
status, 3xx included, a timeout, a broken connection, a body that is not such
JSON) is a retryable error whose message says what came back. ``429``/``503``
with ``Retry-After`` set the next attempt time without counting a failure.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from feedwatch.errors import ConfigurationError, PermanentError, RetryableError
from feedwatch.processors.base import Item, Result
from feedwatch.processors.contract import parse_reply

PREVIEW = 200


def parse_headers(text: str) -> dict[str, str]:
    """``Name: value`` pairs, one per line (or separated by ``\\n`` escapes)."""
    headers: dict[str, str] = {}
    for raw in text.replace("\\n", "\n").splitlines():
        line = raw.strip()
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            # Never echo the line: it may hold a secret.
            raise ConfigurationError("handler_headers must be `Name: value` lines; one line is not")
        headers[name.strip()] = value.strip()
    return headers


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if neither.

    Any value is taken without raising: ASCII digits only (``"²"`` is a
    Unicode digit, not a delay), and a delay past what a float holds is
    infinite (the engine clamps every delay to a week).
    """
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value) if len(value) < 300 else float("inf")
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max((when - datetime.now(UTC)).total_seconds(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _preview(body: bytes) -> str:
    text = body[:PREVIEW].decode("utf-8", "replace").replace("\n", " ")
    return repr(text + ("..." if len(body) > PREVIEW else "")) if body else "an empty body"


class HTTPProcessor:
    def __init__(
        self,
        url: str,
        *,
        feed: str,
        timeout: float = 30.0,
        connect_timeout: float = 5.0,
        headers: dict[str, str] | None = None,
        max_body: int = 16_777_216,
        health_path: str = "",
        concurrency: int = 16,
        verify_tls: bool = True,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"the handler URL must be http:// or https://, not {redact_url(url)!r}")
        self.url = url
        self.shown_url = redact_url(url)
        self.feed = feed
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.headers = headers or {}
        self.max_body = max_body
        self.health_path = health_path
        self.concurrency = concurrency
        self.verify_tls = verify_tls
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency, keepalive_timeout=30, ssl=self.verify_tls
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=self.timeout + self.connect_timeout,
                    sock_connect=self.connect_timeout,
                    sock_read=self.timeout,
                ),
            )
        return self._session

    async def process(self, item: Item) -> Result:
        headers = {
            **self.headers,
            "Content-Type": item.content_type,
            "X-Feed-Name": self.feed,
            "X-Feed-Partition": item.partition,
            "X-Feed-Item": item.id,
            "X-Feed-Gate": str(item.gate),
            "X-Feed-Attempt": str(item.attempt),
        }
        for name in ("Content-Type", "X-Feed-Partition", "X-Feed-Item"):  # never the configured ones
            value = headers[name]
            # isprintable() first: C code answers the usual id, no loop per character.
            if not value.isprintable() and any(ord(c) < 32 or ord(c) == 127 for c in value):
                # Enqueue refuses such ids now; an item stored before cannot be sent.
                raise PermanentError(
                    f"{name} {value!r} holds control characters and cannot be sent as an HTTP header"
                )
        try:
            async with self._client().post(
                self.url, data=item.data or b"", headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                after = response.headers.get("Retry-After")
                body = await self._read_body(response)
        except TimeoutError:
            raise RetryableError(
                f"the handler did not answer within {self.timeout:g} s (read timeout)"
            ) from None
        except aiohttp.ClientError as error:
            raise RetryableError(
                f"cannot reach the handler at {self.shown_url}: {type(error).__name__}: {error}"
            ) from None
        if status in (429, 503) and (delay := retry_after(after)) is not None:
            raise RetryableError(f"the handler answered HTTP {status} with Retry-After {after}", delay=delay)
        if not 200 <= status < 300:
            raise RetryableError(f"the handler answered HTTP {status} with {_preview(body)}")
        try:
            reply = json.loads(body)
        except ValueError:
            raise RetryableError(f"the handler's reply is not JSON: {_preview(body)}") from None
        return parse_reply(reply)

    async def _read_body(self, response: aiohttp.ClientResponse) -> bytes:
        """The whole body, refused as soon as it is known to exceed ``max_body``.

        ``StreamReader.read(n)`` returns what has arrived so far, not ``n``
        bytes: the body is read to its end, chunk by chunk, with the limit
        checked on the way (and up front when ``Content-Length`` says it).
        """
        length = response.content_length
        if length is not None and length > self.max_body:
            raise RetryableError(
                f"the handler's reply is {length} bytes, over {self.max_body} bytes (handler_max_body)"
            )
        body = bytearray()
        async for chunk in response.content.iter_any():
            body += chunk
            if len(body) > self.max_body:
                raise RetryableError(f"the handler's reply is over {self.max_body} bytes (handler_max_body)")
        return bytes(body)

    async def ready(self) -> bool:
        """Whether the handler's health path answers 2xx (True when none is set)."""
        if not self.health_path:
            return True
        parts = urlsplit(self.url)
        url = urlunsplit((parts.scheme, parts.netloc, self.health_path, "", ""))
        try:
            async with self._client().get(url, headers=self.headers, allow_redirects=False) as r:
                return 200 <= r.status < 300
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
