"""The operator's one background loop: periodic checks over the registry.

kopf adds a finalizer to every object with a ``@kopf.timer`` or
``@kopf.daemon``, which would keep a FeedWatcher from being deleted while the
operator is down; so the periodic work lives here instead, in one task
started with the operator. Each pass:

- every ``secret_check_interval`` seconds, reads each distinct referenced
  Secret once (GET by name, never a watch) and reconciles the FeedWatchers
  whose Secrets appeared, vanished or changed (``uid``/``resourceVersion``):
  that rolls the pods through the checksum annotation, and retries
  ``SecretNotFound``/``SecretKeyNotFound``; FeedWatchers in
  ``DeploymentConflict`` look at the object in the way again;
- reconciles the FeedWatchers whose retry is due (an unreachable database,
  with backoff up to ``database_retry_cap``; an unexpected API failure);
  each reconcile runs in a task of its own, so one slow database never delays
  the next pass;
- then sleeps until the next of those is due (at most one second).

A reconcile that fails is logged and retried; the loop itself never dies of
one FeedWatcher. ``start`` and ``stop`` are safe to call twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from feedwatch.observability.actions import Action
from feedwatch.operator import problems
from feedwatch.operator.reconciling import Key, Reconciler

log = logging.getLogger("feedwatch.operator.loop")

#: Called once per pass after the periodic checks (the autoscaler's hook).
PassHook = Callable[[float], Awaitable[None]]


class BackgroundLoop:
    def __init__(
        self,
        reconciler: Reconciler,
        *,
        secret_check_interval: float,
        clock: Callable[[], float] = time.monotonic,
        max_sleep: float = 1.0,
    ) -> None:
        self.reconciler = reconciler
        self.secret_check_interval = secret_check_interval
        self.clock = clock
        self.max_sleep = max_sleep
        self.hooks: list[PassHook] = []
        self._task: asyncio.Task[None] | None = None
        self._next_secret_check = 0.0
        self._wake = asyncio.Event()
        self._inflight: dict[Key, asyncio.Task[None]] = {}
        self._again: set[Key] = set()

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="feedwatch-operator-loop")
            self._task.add_done_callback(self._died)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.remove_done_callback(self._died)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        inflight = list(self._inflight.values())
        for running in inflight:
            running.cancel()
        await asyncio.gather(*inflight, return_exceptions=True)

    def wake(self) -> None:
        """Run a pass now (e.g. a retry became due earlier than the loop expected)."""
        self._wake.set()

    def _died(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "the background loop died: %r; /healthz now fails",
                task.exception(),
                extra={"action": Action.LOOP_DIED},
            )

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end the loop
                log.exception("background pass failed", extra={"action": Action.LOOP_PASS_FAILED})
            await self._sleep()

    async def run_once(self) -> None:
        now = self.clock()
        if now >= self._next_secret_check:
            self._next_secret_check = now + self.secret_check_interval
            await self.check_secrets()
        self.spawn(self.reconciler.due(self.clock()))
        for hook in self.hooks:
            await hook(self.clock())

    async def _sleep(self) -> None:
        now = self.clock()
        next_due = self.reconciler.next_due(exclude=self._inflight.keys())
        wake_at = min(self._next_secret_check, next_due or float("inf"))
        delay = max(0.05, min(self.max_sleep, wake_at - now))
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def check_secrets(self) -> None:
        """One GET per distinct referenced Secret; reconcile the FeedWatchers whose Secrets changed."""
        reconciler = self.reconciler
        refs = reconciler.secret_refs()
        changed: set[Key] = set()

        async def check(ref: Key) -> None:
            before = reconciler.secrets.get(ref)
            try:
                after = await reconciler.kube.read_secret(*ref)
            except Exception as error:
                log.warning(
                    "cannot read Secret %s/%s: %s", *ref, error, extra={"action": Action.SECRET_READ_FAILED}
                )
                return
            reconciler.secrets[ref] = after
            if _version(before) != _version(after):
                changed.update(refs[ref])

        await reconciler.gather(check(ref) for ref in refs)
        for entry in reconciler.entries.values():
            if entry.problem is not None and entry.problem.reason == problems.DEPLOYMENT_CONFLICT:
                reconciler.deployments.pop(entry.key, None)  # read the object in the way again
                changed.add(entry.key)
        self.spawn(sorted(changed), again=True)

    def spawn(self, keys: Iterable[Key], *, again: bool = False) -> None:
        """Reconcile ``keys`` in tasks of their own, so a slow one never holds up the loop.

        With ``again``, a key already being reconciled is reconciled once more when that
        run ends (it may have read what has just changed).
        """
        for key in keys:
            if key in self._inflight:
                if again:
                    self._again.add(key)
                continue
            task = asyncio.create_task(
                self.reconciler.reconcile_quietly(key), name=f"reconcile {key[0]}/{key[1]}"
            )
            self._inflight[key] = task
            task.add_done_callback(functools.partial(self._finished, key))

    def _finished(self, key: Key, _task: asyncio.Task[None]) -> None:
        self._inflight.pop(key, None)
        if key in self._again and self._task is not None:
            self._again.discard(key)
            self.spawn([key])


def _version(snapshot: object) -> tuple[str, str] | None:
    version = getattr(snapshot, "version", None)
    return version if isinstance(version, tuple) else None
