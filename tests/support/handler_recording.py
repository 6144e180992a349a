"""A real HTTP handler process that records every call (the fault suite's handler).

Run as ``python -m tests.support.handler_recording --log CALLS.jsonl --port-file PORT``.
It serves the feedwatch handler contract on ``POST /`` and appends one JSON
line per call to the log *when the request arrives*, before it answers, so a
call is on record even when its watcher never sees the answer. Each line
holds a sequence number ``n`` (the order in which this one process received
the calls: a total order with no clock involved), the feed headers, the
``X-Watcher`` header (watchers send it through ``FEEDWATCH_HANDLER_HEADERS``)
and the ``outcome`` the handler chose.

Behaviour (``--config`` JSON):

- an item walks its gates: at gate ``g`` below its ``last_gate`` (from the
  item's JSON data ``{"last_gate": N}``, default ``last_gate`` of the config)
  the answer is ``{"done": false, "gate": g + 1}``, at its last gate
  ``{"done": true}``; the data written back names the call that produced it;
- ``delay``: seconds every call takes; ``delay_prefix``/``delay_items``: only
  items whose id starts with the prefix take ``delay_items`` seconds;
- faults, each a probability drawn per call from a seeded generator:
  ``p_500`` (HTTP 500), ``p_timeout`` (answer after ``timeout_seconds``, past
  the watcher's handler timeout), ``p_reset`` (the connection is reset, no
  answer at all), ``p_slow`` (answer correctly after ``slow_seconds``);
- ``poison_prefix``: items whose id starts with it always get HTTP 500;
  ``fatal_prefix``: items whose id starts with it get an error with ``no_retry``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import struct
import time
from pathlib import Path
from typing import Any

from aiohttp import web

DEFAULTS: dict[str, Any] = {
    "last_gate": 0,
    "delay": 0.0,
    "delay_prefix": "",
    "delay_items": 0.0,
    "p_500": 0.0,
    "p_timeout": 0.0,
    "timeout_seconds": 3.0,
    "p_reset": 0.0,
    "p_slow": 0.0,
    "slow_seconds": 0.5,
    "poison_prefix": "",
    "fatal_prefix": "",
    "seed": 1,
}


class Recorder:
    def __init__(self, log: Path, config: dict[str, Any]) -> None:
        self.log = log
        self.config = {**DEFAULTS, **config}
        self.rng = random.Random(self.config["seed"])
        self.seq = 0

    def write(self, entry: dict[str, Any]) -> None:
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def choose(self, item: str, body: bytes) -> tuple[str, int | None]:
        """The outcome of this call and, for answers, the item's last gate."""
        c = self.config
        if c["poison_prefix"] and item.startswith(c["poison_prefix"]):
            return "poison", None
        if c["fatal_prefix"] and item.startswith(c["fatal_prefix"]):
            return "fatal", None
        draw = self.rng.random()
        for name in ("p_500", "p_timeout", "p_reset"):
            if draw < c[name]:
                return name[2:], None
            draw -= c[name]
        slow = draw < c["p_slow"]
        last = c["last_gate"]
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("last_gate"), int):
            last = data["last_gate"]
        return ("slow" if slow else "answer"), last

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        h = request.headers
        self.seq += 1
        item = h.get("X-Feed-Item", "")
        gate = int(h.get("X-Feed-Gate", "0"))
        outcome, last = self.choose(item, body)
        done = last is not None and gate >= last
        entry = {
            "n": self.seq, "t": time.time(), "feed": h.get("X-Feed-Name"),
            "p": h.get("X-Feed-Partition"), "i": item, "g": gate,
            "a": int(h.get("X-Feed-Attempt", "0")), "w": h.get("X-Watcher"),
            "outcome": outcome if last is None else ("done" if done else "gate") + (
                "-slow" if outcome == "slow" else ""
            ),
        }  # fmt: skip
        self.write(entry)
        c = self.config
        delay = c["delay"]
        if c["delay_prefix"] and item.startswith(c["delay_prefix"]):
            delay = c["delay_items"]
        if outcome == "slow":
            delay += c["slow_seconds"]
        if outcome == "timeout":
            delay += c["timeout_seconds"]
        if delay:
            await asyncio.sleep(delay)
        if outcome in ("500", "poison"):
            return web.Response(status=500, text=f"injected failure ({outcome})")
        if outcome == "fatal":
            return web.json_response({"error": {"message": "fatal item", "no_retry": True}})
        if outcome == "reset":
            reset(request)
            return web.Response(status=500)
        result = {"by": entry["n"], "w": entry["w"], "g": gate, "a": entry["a"]}
        if done:
            return web.json_response({"done": True, "data": result})
        return web.json_response({"done": False, "gate": gate + 1, "data": result})


def reset(request: web.Request) -> None:
    """Close the connection with a TCP reset: the client sees no answer at all."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def main(args: argparse.Namespace) -> None:
    recorder = Recorder(Path(args.log), json.loads(args.config))
    app = web.Application()
    app.router.add_post("/", recorder.handle)
    app.router.add_get("/_health", health)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port, backlog=512)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    publish(Path(args.port_file), port)
    await asyncio.Event().wait()


def publish(path: Path, port: int) -> None:
    """Write the port atomically: the test reads the file as soon as it exists."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(path)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True)
    parser.add_argument("--port-file", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--config", default="{}")
    asyncio.run(main(parser.parse_args()))
