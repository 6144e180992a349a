"""A real HTTP handler process for the service tests.

It implements the HTTP handler contract of README.md: ``POST /`` with an item's
data as the body and the ``X-Feed-*`` headers; it answers the contract's JSON.
What it does for an item is chosen by the item's data, a JSON object whose
``behave`` field names a behaviour (see :data:`BEHAVIOURS`); other fields tune
it. Every call is recorded as two JSON lines in the log file: ``call`` when
the request arrives, ``reply`` when the answer is about to be sent (with the
times ``t``), so tests can check ordering (fan-in) from the handler's side.

Run it as a program (``python tests/support/handler.py --port-file F --log L``);
it listens on a free loopback port and writes that port to ``F`` once it
accepts connections. ``GET /healthz`` answers with the status set by
``POST /_control {"health": 503}``; ``POST /_control {"flags": {...}}`` sets
flags that behaviours read (e.g. ``fixed`` for ``broken_until_fixed``).

:class:`Handler` starts and drives it from a test.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BEHAVIOURS = (
    "ok",  # done, data gains "seen"
    "gates",  # gate < last (default 2): not done at gate + 1; at last: done
    "sleep",  # sleep `seconds` (default 0.5; none once the `fast` flag is set), then done
    "500",  # HTTP 500 with a short text body
    "500_then_ok",  # HTTP 500 for attempts <= `times` (default 1), then done
    "302",  # a redirect
    "empty",  # 200 with an empty body
    "html",  # 200 with an HTML page
    "{}",  # 200 with {} (neither done nor error)
    "big",  # 200 with a 10 MB body
    "big_data",  # done with `size` bytes of data (default 2 MB): over max_item_bytes
    "close",  # close the connection without an answer
    "429",  # 429 with Retry-After `after` (default 1) for attempts <= `times` (default 2)
    "error",  # {"error": {"message": ...}} (retryable)
    "no_retry",  # {"error": {"message": ..., "no_retry": true}}
    "lower_gate",  # not done at gate - 1
    "poll",  # not done at the same gate, forever
    "gofeed",  # gofeed's spelling: {"complete": true, "response": ...}
    "broken_until_fixed",  # no_retry error until the `fixed` flag is set, then done
)

BIG = 10 * 1024 * 1024


# -- the server -------------------------------------------------------------------


class State:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.health = 200
        self.flags: dict[str, Any] = {}

    def record(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, "t": time.time(), "pid": os.getpid(), **fields})
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _reply(body: Any) -> tuple[int, dict[str, str], bytes]:
    return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()


def behave(state: State, data: Any, gate: int, attempt: int) -> tuple[int, dict[str, str], bytes] | None:
    """The answer to one call: (status, headers, body), or None to drop the connection."""
    spec = data if isinstance(data, dict) else {}
    kind = spec.get("behave", "ok")
    result = {**spec, "seen": [*spec.get("seen", []), gate]} if isinstance(data, dict) else data
    match kind:
        case "ok" | "sleep":
            return _reply({"done": True, "data": result})
        case "gates":
            if gate < int(spec.get("last", 2)):
                return _reply({"done": False, "gate": gate + 1, "data": result})
            return _reply({"done": True, "data": result})
        case "500":
            return 500, {"Content-Type": "text/plain"}, b"boom: internal handler error"
        case "500_then_ok":
            if attempt <= int(spec.get("times", 1)):
                return 500, {"Content-Type": "text/plain"}, b"boom: not yet"
            return _reply({"done": True, "data": result})
        case "302":
            return 302, {"Location": "/elsewhere", "Content-Type": "text/plain"}, b""
        case "empty":
            return 200, {"Content-Type": "application/json"}, b""
        case "html":
            page = b"<!DOCTYPE html><html><body><h1>Welcome to nginx!</h1></body></html>"
            return 200, {"Content-Type": "text/html"}, page
        case "{}":
            return _reply({})
        case "big":
            body = b'{"done": true, "data": "' + b"x" * BIG + b'"}'
            return 200, {"Content-Type": "application/json"}, body
        case "big_data":
            return _reply({"done": True, "data": "y" * int(spec.get("size", 2 * 1024 * 1024))})
        case "close":
            return None
        case "429":
            if attempt <= int(spec.get("times", 2)):
                headers = {"Retry-After": str(spec.get("after", 1)), "Content-Type": "text/plain"}
                return 429, headers, b"slow down"
            return _reply({"done": True, "data": result})
        case "error":
            return _reply({"error": {"message": "transient trouble in the handler"}})
        case "no_retry":
            return _reply({"error": {"message": "bad input: cannot parse", "no_retry": True}})
        case "lower_gate":
            return _reply({"done": False, "gate": gate - 1})
        case "poll":
            return _reply({"done": False})
        case "gofeed":
            return _reply({"complete": True, "response": {**spec, "via": "gofeed"}})
        case "broken_until_fixed":
            if state.flags.get("fixed"):
                return _reply({"done": True, "data": result})
            return _reply({"error": {"message": "broken until fixed", "no_retry": True}})
    return 400, {"Content-Type": "text/plain"}, f"unknown behaviour {kind!r}".encode()


async def serve(port_file: Path, log: Path, host: str = "127.0.0.1") -> None:
    from aiohttp import web

    state = State(log)

    async def item(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        h = request.headers
        gate, attempt = int(h.get("X-Feed-Gate", "0")), int(h.get("X-Feed-Attempt", "0"))
        try:
            data = json.loads(raw) if raw and "json" in h.get("Content-Type", "") else raw.decode()
        except ValueError:
            data = raw.decode("utf-8", "replace")
        auth = h.get("Authorization")
        common = {
            "feed": h.get("X-Feed-Name"),
            "p": h.get("X-Feed-Partition"),
            "i": h.get("X-Feed-Item"),
            "g": gate,
            "a": attempt,
        }
        state.record(
            "call",
            **common,
            behave=data.get("behave", "ok") if isinstance(data, dict) else None,
            content_type=h.get("Content-Type"),
            data=data if len(raw) < 4096 else f"<{len(raw)} bytes>",
            auth_sha256=hashlib.sha256(auth.encode()).hexdigest() if auth else None,
        )
        if isinstance(data, dict) and data.get("behave") == "sleep" and not state.flags.get("fast"):
            await asyncio.sleep(float(data.get("seconds", 0.5)))
        elif isinstance(data, dict) and data.get("delay"):
            await asyncio.sleep(float(data["delay"]))
        answer = behave(state, data, gate, attempt)
        if answer is None:
            state.record("reply", **common, status=None)
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # aiohttp drops the request quietly
        status, headers, body = answer
        state.record("reply", **common, status=status)
        return web.Response(status=status, headers=headers, body=body)

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(status=state.health, text="ok" if state.health == 200 else "unhealthy")

    async def control(request: web.Request) -> web.Response:
        change = await request.json()
        if "health" in change:
            state.health = int(change["health"])
        state.flags.update(change.get("flags", {}))
        return web.json_response({"health": state.health, "flags": state.flags})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", item)
    app.router.add_post("/items", item)
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/_control", control)
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    port = int(runner.addresses[0][1])
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.rename(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- the test side ----------------------------------------------------------------


class Handler:
    """The handler as a subprocess: ``with Handler(tmp_path) as h: ... h.url ... h.calls()``."""

    def __init__(self, directory: Path, name: str = "handler") -> None:
        self.log = directory / f"{name}.jsonl"
        self.port_file = directory / f"{name}.port"
        self.output = directory / f"{name}.out"
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.base + "/items"

    def start(self, timeout: float = 30) -> Handler:
        self.port_file.unlink(missing_ok=True)
        with open(self.output, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--port-file",
                    str(self.port_file),
                    "--log",
                    str(self.log),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the handler exited {self.proc.returncode}: {self.output.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the handler did not start in {timeout} s")
            time.sleep(0.02)
        self.port = int(self.port_file.read_text())
        return self

    def stop(self) -> None:
        # Imported here: run as a program, this file has tests/support, not the repository, on sys.path.
        from tests.support.processes import stop

        if self.proc is not None:
            stop(self.proc, timeout=10)

    def __enter__(self) -> Handler:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [r for r in rows if kind is None or r["kind"] == kind]

    def calls(self, item: str | None = None, partition: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.records("call")
            if (item is None or r["i"] == item) and (partition is None or r["p"] == partition)
        ]

    def control(self, **change: Any) -> dict[str, Any]:
        request = urllib.request.Request(  # noqa: S310 - loopback, http
            self.base + "/_control",
            data=json.dumps(change).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return json.loads(response.read())  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.port_file, args.log))


if __name__ == "__main__":
    main()
