"""A fast local HTTP handler for scenario 2: ``python -m bench.handler --port N``.

It honours feedwatch's handler contract with as little work as a handler can
do: read the body, read ``X-Feed-Gate``, answer ``{"done": false, "gate": g + 1}``
below the last gate and ``{"done": true}`` at it. Keep-alive (aiohttp's
default), no access log. ``GET /healthz`` answers 200 once it listens.
"""

from __future__ import annotations

import argparse
import os

from aiohttp import web

LAST_GATE = int(os.environ.get("BENCH_GATES", "2")) - 1
NEXT = {g: f'{{"done":false,"gate":{g + 1}}}'.encode() for g in range(LAST_GATE)}
DONE = b'{"done":true}'


async def item(request: web.Request) -> web.Response:
    await request.read()
    gate = int(request.headers.get("X-Feed-Gate", "0"))
    body = NEXT.get(gate, DONE) if gate < LAST_GATE else DONE
    return web.Response(body=body, content_type="application/json")


async def healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/", item)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
