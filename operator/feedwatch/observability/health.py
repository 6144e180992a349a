"""``/healthz``, ``/readyz`` and ``/metrics`` on the watcher's health port.

``/healthz`` is the liveness probe: it fails (HTTP 503, with the reasons) when
the watcher is wedged in a way it cannot get out of by itself, so that
Kubernetes restarts it. :class:`Liveness` holds the evidence the engine
reports: an item still in flight well past its deadline (the handler timeout,
the connect timeout and the grace period: no processor call should take
longer), results that have not been committed for longer than a lease
(failing or hanging commits: meanwhile the watcher's leases are renewed over
partitions that cannot move), or a watcher task that died.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from feedwatch.errors import FeedwatchError
from feedwatch.observability.metrics import Metrics


class Liveness:
    """What the engine reports for ``/healthz``; ``problems()`` says what is wedged, if anything."""

    def __init__(
        self,
        *,
        item_deadline: float,
        commit_deadline: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Seconds an item may stay in flight (call, outcome, queued for commit).
        self.item_deadline = item_deadline
        #: Seconds the committer may keep failing before the watcher counts as wedged.
        self.commit_deadline = commit_deadline
        self._clock = clock
        self._in_flight: dict[Hashable, tuple[float, str]] = {}
        self._failing_since: float | None = None
        self._last_commit_error = ""
        self._dead: str | None = None

    def item_started(self, key: Hashable, name: str) -> None:
        self._in_flight[key] = (self._clock(), name)

    def item_finished(self, key: Hashable) -> None:
        self._in_flight.pop(key, None)

    def commit_started(self) -> None:
        """A commit attempt begins; results wait from the first attempt until one succeeds."""
        if self._failing_since is None:
            self._failing_since = self._clock()

    def commit_failed(self, error: str) -> None:
        self.commit_started()
        self._last_commit_error = error

    def commit_succeeded(self) -> None:
        self._failing_since = None
        self._last_commit_error = ""

    def died(self, reason: str) -> None:
        """A part of the watcher stopped for good."""
        self._dead = reason

    def problems(self) -> list[str]:
        """Why the watcher is wedged (empty when it is alive)."""
        now = self._clock()
        found: list[str] = []
        if self._dead is not None:
            found.append(self._dead)
        stuck = [
            (started, name)
            for started, name in self._in_flight.values()
            if now - started > self.item_deadline
        ]
        if stuck:
            started, name = min(stuck)
            found.append(
                f"{len(stuck)} item(s) in flight for over {self.item_deadline:g} s "
                f"(handler timeout + connect timeout + grace period), {name} for {now - started:.0f} s"
            )
        if self._failing_since is not None and now - self._failing_since > self.commit_deadline:
            why = self._last_commit_error or "a commit has not returned"
            found.append(
                f"results not committed for {now - self._failing_since:.0f} s, over the lease "
                f"({self.commit_deadline:g} s): {why}"
            )
        return found


class HealthServer:
    """``/healthz``: alive. ``/readyz``: the checks pass. ``/metrics``: Prometheus."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        checks: Mapping[str, Callable[[], Awaitable[bool]]],
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes reach pods on their pod IP
        liveness: Liveness | None = None,
    ) -> None:
        self.liveness = liveness
        self.port = port
        self.host = host
        self.metrics = metrics
        self.checks = checks
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port).start()
        except OSError as error:
            await self.stop()
            raise FeedwatchError(
                f"cannot serve /healthz, /readyz and /metrics on {self.host}:{self.port}: "
                f"{error.strerror or error} (health_port)"
            ) from None

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, _: web.Request) -> web.Response:
        problems = self.liveness.problems() if self.liveness is not None else []
        if problems:
            return web.json_response({"status": "wedged", "problems": problems}, status=503)
        return web.json_response({"status": "ok"})

    async def _readyz(self, _: web.Request) -> web.Response:
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                results[name] = await asyncio.wait_for(check(), timeout=5)
            except Exception:
                results[name] = False
        ok = all(results.values())
        return web.json_response({"ready": ok, "checks": results}, status=200 if ok else 503)

    async def _metrics(self, _: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
