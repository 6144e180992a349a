#!/usr/bin/env python3
"""The demo's resume screening step as an HTTP handler service (feedwatch's handler contract).

Run it, then point the demo (or any watcher) at it::

    python examples/resume_handler.py --port 8000 --db sqlite:////tmp/demo.db
    feedwatch demo --handler http://127.0.0.1:8000/ --db sqlite:////tmp/demo.db

The contract (README.md, "The HTTP handler contract", compatible with gofeed):
a watcher POSTs each item's data as the body, with the headers
``X-Feed-Name``, ``X-Feed-Partition``, ``X-Feed-Item``, ``X-Feed-Gate`` and
``X-Feed-Attempt``; the handler answers JSON
``{"gate": int, "done": bool, "data": any, "error": {"message": str, "no_retry": bool}}``.

- A resume (gate 0) is classified: ``{"done": true, "data": {...score...}}``.
- The ``rank`` item (gate 1) runs once every resume of its posting is
  classified: it reads their results back from the database through
  ``feedwatch.Feed`` (hence ``--db``) and answers the top 10.
- A resume the classifier cannot read is a permanent error:
  ``{"error": {"message": "...", "no_retry": true}}``.

Two more endpoints serve the demo: ``GET /healthz`` (the classifier version
and the database) and ``POST /deploy {"classifier": "v2"}``, the demo's
stand-in for deploying a new version of this service.

Standard library only, besides feedwatch (for the database and the demo's
classifier). Ctrl-C or SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from feedwatch import Feed, PermanentError, Store
from feedwatch.demo import screening
from feedwatch.demo.processor import DELAY, read_results
from feedwatch.store.connection import redact


class Service:
    """The handler's state: which classifier is deployed, and the database it reads back."""

    def __init__(self, db: str | None, classifier: str) -> None:
        self.db = db
        self.classifier = classifier
        self.store: Store | None = None  # opened at the first rank: the demo migrates it first
        self._feeds: dict[str, Feed] = {}
        self._lock = threading.Lock()

    def feed(self, name: str) -> Feed:
        if self.db is None:
            raise PermanentError(
                "this handler was started without --db: it cannot read results back"
            )
        with self._lock:
            if self.store is None:
                self.store = Store.open(self.db)
            if name not in self._feeds:
                self._feeds[name] = Feed(self.store, name)
            return self._feeds[name]

    def health(self) -> dict[str, Any]:
        return {
            "ok": True,
            "classifier": self.classifier,
            "database": redact(self.db) if self.db else None,
        }

    def handle(self, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """One item in, one contract reply out."""
        try:
            data = json.loads(body) if body else None
        except ValueError:
            return {"error": {"message": "the item's data is not JSON", "no_retry": True}}
        try:
            if headers.get("x-feed-item") == screening.RANK_ITEM:
                feed = self.feed(headers.get("x-feed-name", ""))
                results = read_results(feed, headers.get("x-feed-partition", ""))
                posting = data.get("posting") if isinstance(data, dict) else None
                return {"done": True, "data": screening.rank(posting, results)}
            time.sleep(random.uniform(*DELAY))  # the "OCR service" takes a moment
            return {"done": True, "data": screening.classify(data, self.classifier)}
        except PermanentError as error:
            return {"error": {"message": str(error), "no_retry": True}}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: watchers reuse their connections
    server: Server

    def do_GET(self) -> None:
        if self.path.split("?")[0] in ("/healthz", "/readyz"):
            self._reply(200, self.server.service.health())
        else:
            self._reply(404, {"error": {"message": f"no such path {self.path}"}})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] == "/deploy":
            self._deploy(body)
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.server.service.handle(headers, body)
        except Exception as error:
            self._reply(500, {"error": {"message": f"{type(error).__name__}: {error}"}})
            return
        self._reply(200, reply)

    def _deploy(self, body: bytes) -> None:
        try:
            version = json.loads(body or b"{}").get("classifier")
        except (ValueError, AttributeError):
            version = None
        if version not in screening.CLASSIFIERS:
            self._reply(
                400, {"error": {"message": f"classifier must be one of {screening.CLASSIFIERS}"}}
            )
            return
        self.server.service.classifier = version
        self._reply(200, self.server.service.health())

    def _reply(self, status: int, payload: Any) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], service: Service, verbose: bool) -> None:
        super().__init__(address, Handler)
        self.service = service
        self.verbose = verbose


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument(
        "--db", default=os.environ.get("FEEDWATCH_DATABASE_URL"),
        help="database URL the rank step reads results from (default: $FEEDWATCH_DATABASE_URL)",
    )  # fmt: skip
    parser.add_argument("--classifier", choices=screening.CLASSIFIERS, default="v1")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    server = Server((args.host, args.port), Service(args.db, args.classifier), args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(
        f"resume handler listening on http://{args.host}:{server.server_port}/ "
        f"(classifier {args.classifier})",
        flush=True,
    )
    try:
        server.serve_forever()
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
