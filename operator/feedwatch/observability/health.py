"""``/healthz``, ``/readyz`` and ``/metrics`` on the watcher's health port."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from feedwatch.errors import FeedwatchError
from feedwatch.observability.metrics import Metrics


class HealthServer:
    """``/healthz``: alive. ``/readyz``: the checks pass. ``/metrics``: Prometheus."""

    def __init__(
        self,
        port: int,
        metrics: Metrics,
        checks: Mapping[str, Callable[[], Awaitable[bool]]],
        *,
        host: str = "0.0.0.0",  # noqa: S104 - probes reach pods on their pod IP
    ) -> None:
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
