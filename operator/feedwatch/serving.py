"""``feedwatch watch``: a watcher with its processor and health server, as one service."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

from feedwatch.engine import Watcher
from feedwatch.errors import ConfigurationError
from feedwatch.observability.actions import Action
from feedwatch.observability.health import HealthServer
from feedwatch.observability.metrics import Metrics
from feedwatch.processors import CallableProcessor, Processor, load_callable
from feedwatch.processors.http import HTTPProcessor, parse_headers
from feedwatch.settings import WatcherSettings
from feedwatch.store import Store

log = logging.getLogger("feedwatch.serving")


def build_processor(
    feed: str, settings: WatcherSettings, *, handler: str | None, processor: str | None
) -> Processor:
    if bool(handler) == bool(processor):
        raise ConfigurationError("give exactly one of --handler URL or --processor module:callable")
    if handler:
        return HTTPProcessor(
            handler,
            feed=feed,
            timeout=settings.handler_timeout,
            connect_timeout=settings.handler_connect_timeout,
            headers=parse_headers(settings.handler_headers),
            max_body=settings.handler_max_body,
            health_path=settings.handler_health_path,
            concurrency=settings.concurrency,
        )
    target: Any = load_callable(processor or "")
    if isinstance(target, type):
        target = target()
    if isinstance(target, Processor):
        return target
    return CallableProcessor(target, timeout=settings.handler_timeout, concurrency=settings.concurrency)


class StartupSignals:
    """SIGTERM/SIGINT noted while the service is still starting (migrating, loading the feed).

    Kubernetes may stop a pod before it is up (a scale-down right after a scale-up):
    the signal is remembered rather than fatal, the start-up steps finish, and the
    watcher stops gracefully at once, exiting 0 like any other stop.
    """

    def __init__(self) -> None:
        self.received: signal.Signals | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._note)

    def _note(self, signum: int, _frame: object) -> None:
        self.received = signal.Signals(signum)


async def serve(
    store: Store,
    feed: str,
    processor: Processor,
    settings: WatcherSettings,
    *,
    startup: StartupSignals | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; then stop gracefully and release every lease.

    The first signal starts the graceful stop (bounded by the grace period); later
    ones are logged and ignored, so they cannot turn a clean exit into a kill. A
    signal ``startup`` noted before the loop began counts as the first.
    """
    metrics = Metrics(feed)
    watcher = Watcher(store, feed, processor, settings, metrics=metrics)
    restore_signals = _handle_signals(watcher, startup.received if startup is not None else None)

    async def database_ready() -> bool:
        await watcher.db(_ping, store)
        return True

    checks = {"database": database_ready}
    ready = getattr(processor, "ready", None)
    if ready is not None:
        checks["handler"] = ready
    health = (
        HealthServer(settings.health_port, metrics, checks, liveness=watcher.liveness)
        if settings.health_port
        else None
    )
    backlog_task: asyncio.Task[None] | None = None
    try:
        if health is not None:
            await health.start()
        backlog_task = asyncio.create_task(_report_backlog(watcher, store, feed, metrics), name="backlog")
        await watcher.run(handle_signals=False)
    finally:
        if backlog_task is not None:
            backlog_task.cancel()
        if health is not None:
            await health.stop()
        close = getattr(processor, "close", None)
        if close is not None:
            await close()
        restore_signals()


def _handle_signals(watcher: Watcher, early: signal.Signals | None) -> Callable[[], None]:
    """SIGTERM/SIGINT stop the watcher once; returns what undoes it at the end."""
    loop = asyncio.get_running_loop()
    received: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        if received:
            log.warning(
                "%s again: already stopping gracefully", sig.name, extra={"action": Action.SIGNAL_IGNORED}
            )
            return
        received.append(sig)
        log.info(
            "%s: stopping gracefully (grace period %g s)",
            sig.name,
            watcher.settings.grace_period,
            extra={"action": Action.SHUTDOWN_REQUESTED},
        )
        watcher.request_stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if early is not None:
        on_signal(early)

    def restore() -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)  # which would restore the default: dying of it
            signal.signal(sig, signal.SIG_IGN)  # the process exits now; let it exit 0

    return restore


def _ping(store: Store) -> None:
    """One round trip to the database (SQLite included: ``store.now`` does not touch it).

    A raw pooled connection, so no transaction (and on SQLite no write lock) is taken.
    """
    conn = store.engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT 1")
        cursor.fetchall()
        cursor.close()
    finally:
        conn.close()


async def _report_backlog(watcher: Watcher, store: Store, feed: str, metrics: Metrics) -> None:
    """Refresh the backlog gauge every few seconds (a capped count, so its cost is bounded)."""
    while True:
        try:
            seen = await watcher.db(store.feed_backlog, feed, limit=10_000)
            metrics.observe_backlog(seen.partitions, seen.items, seen.oldest_item_age_seconds)
        except Exception as error:
            log.debug("backlog not refreshed: %s", error)
        await asyncio.sleep(max(watcher.settings.poll_interval * 5, 5.0))
