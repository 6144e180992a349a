"""The assembled operator: its parts, built at startup and stopped at cleanup.

One :class:`Operator` per process holds the API client, the database pool,
the registry and reconciler, the background loop, and the HTTP endpoint
(``/healthz`` and ``/metrics`` on one port). kopf's startup handler builds it
and its cleanup handler stops it, so ``feedwatch operator`` and ``kopf run -m
feedwatch.operator`` run the same thing.
"""

from __future__ import annotations

import logging

from aiohttp import web

from feedwatch.observability.actions import Action
from feedwatch.operator.backlog import BacklogReader
from feedwatch.operator.database import Databases
from feedwatch.operator.kube import Kube, load_client
from feedwatch.operator.loop import BackgroundLoop
from feedwatch.operator.metrics import OperatorMetrics
from feedwatch.operator.reconciling import Reconciler
from feedwatch.operator.scaler import Autoscaler, AutoscalingPass
from feedwatch.settings import OperatorSettings

log = logging.getLogger("feedwatch.operator")


class Operator:
    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self.metrics = OperatorMetrics()
        self.kube = Kube(load_client(), on_write=lambda kind: self.metrics.writes.labels(kind).inc())
        self.databases = Databases()
        self.reconciler = Reconciler(
            kube=self.kube, databases=self.databases, settings=settings, metrics=self.metrics
        )
        self.loop = BackgroundLoop(self.reconciler, secret_check_interval=settings.secret_check_interval)
        # Autoscaling (H5): one backlog reader (a small pool per database) and a hook per loop pass.
        self.autoscaler = Autoscaler(backlogs=BacklogReader(), registry=self.metrics.registry)
        self.autoscaling = AutoscalingPass(self.reconciler, self.autoscaler)
        self.loop.hooks.append(self.autoscaling)
        self._runner: web.AppRunner | None = None
        self._stopped = False

    async def start(self) -> None:
        if self.settings.health_port:
            app = web.Application()
            app.router.add_get("/healthz", self._healthz)
            if self.settings.metrics:
                app.router.add_get("/metrics", self._metrics)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "0.0.0.0", self.settings.health_port).start()  # noqa: S104
        self.loop.start()
        log.info(
            "operator started (namespaces: %s, watcher image %s, health port %s)",
            ", ".join(self.settings.namespaces) or "all",
            self.settings.watcher_image,
            self.settings.health_port or "off",
            extra={"action": Action.OPERATOR_STARTED},
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self.loop.stop()
        await self.autoscaling.stop()
        self.autoscaler.backlogs.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self.databases.close()
        self.kube.close()
        log.info("operator stopped", extra={"action": Action.OPERATOR_STOPPED})

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.loop.alive:
            return web.Response(text="ok\n")
        return web.Response(status=503, text="the background loop is not running\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.render(), content_type="text/plain", charset="utf-8")
