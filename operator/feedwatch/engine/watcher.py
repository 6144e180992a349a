"""The :class:`Watcher`: one engine instance working one feed."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from feedwatch.engine.clock import Clock, DatabaseClock
from feedwatch.engine.dispatching import Dispatcher
from feedwatch.engine.gating import Checkpointer
from feedwatch.engine.leases import LeaseTable
from feedwatch.engine.leasing import LeaseKeeper
from feedwatch.engine.threads import DatabaseTrouble
from feedwatch.observability.actions import Action
from feedwatch.observability.health import Liveness
from feedwatch.observability.logging import FeedLogger
from feedwatch.observability.metrics import Metrics
from feedwatch.processors.base import Processor
from feedwatch.settings import FeedSettings, WatcherSettings
from feedwatch.store import Store

T = TypeVar("T")


def new_owner_id() -> str:
    """Unique per process start: a restarted pod never inherits the leases of the one that died."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Watcher:
    """Leases partitions of ``feed`` and feeds their items to ``processor``.

    ``start()`` and ``stop()`` are safe to call twice. ``run()`` starts, waits
    for SIGTERM/SIGINT (or :meth:`request_stop`), and stops gracefully: stop
    taking work, let in-flight items finish within the grace period, commit,
    release every lease and remove the heartbeat.

    The watcher only wires its parts, each given what it uses: the lease keeper
    (:mod:`~feedwatch.engine.leasing`) and the dispatcher
    (:mod:`~feedwatch.engine.dispatching`, with the
    :class:`~feedwatch.engine.gating.Checkpointer`) share the lease table and
    the ``clock`` (the database's, unless one is given, e.g. a fake in tests),
    and wake each other through callbacks.
    """

    def __init__(
        self,
        store: Store,
        feed: str,
        processor: Processor,
        settings: WatcherSettings | None = None,
        *,
        owner: str | None = None,
        metrics: Metrics | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.feed = feed
        self.processor = processor
        self.settings = settings or WatcherSettings()
        self.owner = owner or new_owner_id()
        self.metrics = metrics or Metrics(feed)
        self.clock: Clock = clock or DatabaseClock(store.now)
        self.log = FeedLogger(logging.getLogger("feedwatch.engine"), {"feed": feed, "owner": self.owner})
        self.liveness = Liveness(
            item_deadline=self.settings.handler_timeout
            + self.settings.handler_connect_timeout
            + self.settings.grace_period,
            commit_deadline=self.settings.lease_duration,
        )
        self.stopping = False
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="feedwatch-db")
        self._lease_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feedwatch-lease")
        self.trouble = DatabaseTrouble(
            log=self.log, clock=self.clock, pause=min(self.settings.poll_interval, 1.0)
        )
        # The parts wake each other: a dropped lease wakes the lease keeper (below
        # target now), a lease gained or renewed wakes the dispatcher.
        self.leases = LeaseTable(log=self.log, metrics=self.metrics, on_drop=self._wake_leasekeeper)
        self.leasekeeper = LeaseKeeper(
            store=store,
            feed=feed,
            owner=self.owner,
            settings=self.settings,
            feed_settings=store.load_feed(feed),
            clock=self.clock,
            leases=self.leases,
            run=self.db_lease,
            trouble=self.trouble,
            log=self.log,
            metrics=self.metrics,
            stopping=lambda: self.stopping,
            on_change=self._wake_dispatcher,
        )
        feed_settings = self._current_feed_settings
        self.dispatcher = Dispatcher(
            store=store,
            feed=feed,
            owner=self.owner,
            processor=processor,
            settings=self.settings,
            feed_settings=feed_settings,
            clock=self.clock,
            leases=self.leases,
            checkpointer=Checkpointer(
                store=store,
                feed=feed,
                owner=self.owner,
                feed_settings=feed_settings,
                clock=self.clock,
                leases=self.leases,
                run=self.db,
                metrics=self.metrics,
                hold_for=self.settings.renewal_period,
            ),
            run=self.db,
            trouble=self.trouble,
            log=self.log,
            metrics=self.metrics,
            liveness=self.liveness,
            stopping=lambda: self.stopping,
        )
        # A watcher frozen inside a transaction must not hold row locks past its
        # lease, and nobody may wait on a lock for longer than a renewal period.
        store.limit_sessions(self.settings.lease_duration)
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._failure: BaseException | None = None

    @property
    def feed_settings(self) -> FeedSettings:
        """The feed's settings as the lease keeper last read them (at every renewal)."""
        return self.leasekeeper.feed_settings

    def _current_feed_settings(self) -> FeedSettings:
        return self.leasekeeper.feed_settings

    def _wake_leasekeeper(self) -> None:
        self.leasekeeper.wake.set()

    def _wake_dispatcher(self) -> None:
        self.dispatcher.wake.set()

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        await self.db(self.clock.sync)
        self.log.info("watcher %s started", self.owner, extra={"action": Action.WATCHER_STARTED})
        self._spawn(self.leasekeeper.run(), "leasing")
        self._spawn(self.dispatcher.pump(), "dispatching")
        self._spawn(self.dispatcher.committer(), "committing")

    async def stop(self) -> None:
        if not self._started or self._stopped.is_set():
            return
        if self.stopping:
            await self._stopped.wait()
            return
        self.stopping = True
        self.dispatcher.wake.set()
        self.leasekeeper.wake.set()
        await self.dispatcher.drain(self.settings.grace_period)
        committer = next((t for t in self._tasks if t.get_name().endswith("committing")), None)
        if committer is not None and not committer.done():
            try:
                await asyncio.wait_for(asyncio.shield(committer), timeout=self.settings.grace_period + 5)
            except (TimeoutError, Exception):  # noqa: S110 - logged by the guard
                pass
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.leasekeeper.release_all()
        except Exception as error:
            if not self.trouble.is_trouble(error):
                raise
            self.log.warning("could not release leases: %s", error, extra={"action": Action.RELEASE_FAILED})
        self._executor.shutdown(wait=False)
        self._lease_executor.shutdown(wait=False)
        self.log.info("watcher %s stopped", self.owner, extra={"action": Action.WATCHER_STOPPED})
        self._stopped.set()

    def request_stop(self) -> None:
        self._stop_requested.set()

    async def run(self, *, handle_signals: bool = True) -> None:
        """Run until asked to stop (SIGTERM, SIGINT, :meth:`request_stop`) or a task fails."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        try:
            await self.start()
            await self._stop_requested.wait()
        finally:
            await self.stop()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        if self._failure is not None:
            raise self._failure

    async def __aenter__(self) -> Watcher:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    # -- services for the engine's parts ----------------------------------

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call on the watcher's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, partial(fn, *args, **kwargs))

    async def db_lease(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a lease call on a thread of its own: claims blocked on locks never delay renewals."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._lease_executor, partial(fn, *args, **kwargs))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"feedwatch:{self.owner}:{name}")
        task.add_done_callback(self._guard)
        self._tasks.append(task)

    def _guard(self, task: asyncio.Task[None]) -> None:
        """A side task that dies stops the watcher rather than leaving it limping."""
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and self._failure is None:
            self._failure = error
            self.liveness.died(f"task {task.get_name()} failed: {error!r}"[:300])
            self.log.error(
                "task %s failed; stopping",
                task.get_name(),
                exc_info=error,
                extra={"action": Action.WATCHER_FAILED},
            )
            self.request_stop()
