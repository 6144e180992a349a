"""A TCP proxy on loopback that the fault tests steer: the network between watchers and a database.

It runs its own asyncio loop in a thread. The test can

- :meth:`TCPProxy.pause` and :meth:`TCPProxy.resume`: stop forwarding bytes
  (a black hole: connections stay open, nothing arrives, new connections hang);
- :meth:`TCPProxy.cut` and :meth:`TCPProxy.restore`: reset every connection and
  refuse new ones until restored;
- :meth:`TCPProxy.cut_after_commit`: for the next ``count`` result commits
  (a ``COMMIT`` of a transaction that wrote item results), forward the
  ``COMMIT`` to the server, let the server answer, and cut the connection
  before the answer reaches the client: the client cannot know whether its
  transaction committed (an ambiguous commit).

Pausing and cutting work for any protocol. For the ambiguous commit the
client's protocol is read only as far as needed to see SQL text:

- MySQL: packets are a 3-byte length, a sequence byte and a payload;
  ``COM_QUERY`` is ``0x03`` followed by the SQL text (PyMySQL sends it in
  clear, parameters inlined).
- PostgreSQL: after the untyped start-up messages (an SSL or GSS request,
  then the startup message: a 4-byte length and a 4-byte code each),
  messages are a type byte and a 4-byte length that counts itself; a simple
  query ``Q`` carries the SQL text (psycopg sends ``COMMIT`` so), a ``Parse``
  (``P``) a statement name and then the SQL text (the result commit's UPDATE).
  TLS would hide all of it: the servers of the tests run without it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

COM_QUERY = 0x03
#: A statement of this shape belongs to a result commit (``commit_results``).
RESULT_MARK = b"= v.status"


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    buffer: bytearray = field(default_factory=bytearray)
    wrote_results: bool = False
    cut_pending: bool = False
    #: PostgreSQL: still in the untyped start-up messages.
    starting: bool = True


def _rst(writer: asyncio.StreamWriter | None) -> None:
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    try:
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


#: PostgreSQL start-up request codes that another start-up message follows (SSL, GSS encryption).
_PG_REQUESTS = {80877103, 80877104}


class TCPProxy:
    def __init__(self, target_host: str, target_port: int, protocol: str = "mysql") -> None:
        assert protocol in ("mysql", "postgresql"), protocol
        self.protocol = protocol
        self.target = (target_host, target_port)
        self.port = 0
        self.conns: set[_Conn] = set()
        self.commit_cuts: list[float] = []
        self.connections_made = 0
        self._cuts_left = 0
        self._refusing = False
        self._loop = asyncio.new_event_loop()
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    # -- control from the test's thread -----------------------------------------

    def start(self) -> TCPProxy:
        self._thread.start()
        self._call(self._start)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._call(self._stop)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed() and not self._thread.is_alive():
            self._loop.close()

    def pause(self) -> None:
        self._call(self._set_flowing, False)

    def resume(self) -> None:
        self._call(self._set_flowing, True)

    def cut(self) -> None:
        """Reset every connection and refuse new ones until :meth:`restore`."""
        self._call(self._cut)

    def restore(self) -> None:
        self._refusing = False

    def cut_after_commit(self, count: int) -> None:
        self._cuts_left = count

    @property
    def cuts_left(self) -> int:
        return self._cuts_left

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        async def run() -> Any:
            return fn(*args) if not asyncio.iscoroutinefunction(fn) else await fn(*args)

        future: Future[Any] = asyncio.run_coroutine_threadsafe(run(), self._loop)
        return future.result(30)

    # -- the proxy, on its own loop ----------------------------------------------

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    def _cut(self) -> None:
        self._refusing = True
        for conn in list(self.conns):
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        _rst(conn.client)
        _rst(conn.server)
        self.conns.discard(conn)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        if self._refusing:
            _rst(writer)
            return
        conn = _Conn(writer)
        self.conns.add(conn)
        await self._flowing.wait()
        try:
            up_reader, conn.server = await asyncio.open_connection(*self.target)
        except OSError:
            self._close(conn)
            return
        self.connections_made += 1
        await asyncio.gather(
            self._client_to_server(conn, reader), self._server_to_client(conn, up_reader),
            return_exceptions=True,
        )  # fmt: skip
        self._close(conn)

    async def _client_to_server(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        assert conn.server is not None
        while data := await reader.read(65536):
            await self._flowing.wait()
            if conn not in self.conns:
                return
            forward = self._scan(conn, data)
            conn.server.write(data[:forward])
            await conn.server.drain()
        self._close(conn)

    def _next_sql(self, conn: _Conn, buf: bytearray, offset: int) -> tuple[int, bytes | None] | None:
        """The end of the client message at ``offset`` and its SQL text (if it has one);
        None while the message is incomplete."""
        if self.protocol == "mysql":
            if len(buf) - offset < 4:
                return None
            length = buf[offset] | buf[offset + 1] << 8 | buf[offset + 2] << 16
            if len(buf) - offset < 4 + length:
                return None
            payload = bytes(buf[offset + 4 : offset + 4 + length])
            sql = payload[1:] if payload and payload[0] == COM_QUERY else None
            return offset + 4 + length, sql
        if conn.starting:
            if len(buf) - offset < 8:
                return None
            length, code = struct.unpack_from("!ii", buf, offset)
            if len(buf) - offset < length:
                return None
            conn.starting = code in _PG_REQUESTS
            return offset + length, None
        if len(buf) - offset < 5:
            return None
        kind = buf[offset]
        (length,) = struct.unpack_from("!i", buf, offset + 1)
        if len(buf) - offset < 1 + length:
            return None
        payload = bytes(buf[offset + 5 : offset + 1 + length])
        if kind == ord("Q"):
            return offset + 1 + length, payload.split(b"\0", 1)[0]
        if kind == ord("P"):
            return offset + 1 + length, payload.split(b"\0", 2)[1]
        return offset + 1 + length, None

    def _scan(self, conn: _Conn, data: bytes) -> int:
        """Read whole client messages; return how much of ``data`` to forward."""
        buf = conn.buffer
        buf += data
        consumed_before = len(buf) - len(data)
        offset = 0
        while (message := self._next_sql(conn, buf, offset)) is not None:
            offset, sql = message
            if sql is None:
                continue
            if RESULT_MARK in sql:
                conn.wrote_results = True
            elif sql.strip().upper() in (b"COMMIT", b"ROLLBACK"):
                is_commit = sql.strip().upper() == b"COMMIT"
                if is_commit and conn.wrote_results and self._cuts_left > 0:
                    self._cuts_left -= 1
                    conn.cut_pending = True
                    del buf[:offset]
                    return offset - consumed_before
                conn.wrote_results = False
        del buf[:offset]
        return len(data)

    async def _server_to_client(self, conn: _Conn, reader: asyncio.StreamReader) -> None:
        assert self._flowing is not None
        while data := await reader.read(65536):
            await self._flowing.wait()
            if conn not in self.conns:
                return
            if conn.cut_pending:
                # The server answered the COMMIT: it is applied. The client never hears it.
                self.commit_cuts.append(time.time())
                self._close(conn)
                return
            conn.client.write(data)
            await conn.client.drain()
        self._close(conn)
