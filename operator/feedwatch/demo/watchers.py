"""The demo's watchers: one in this process, or several ``feedwatch watch`` processes.

Both kinds name their watchers ``w1``, ``w2``, ... (for the display), deploy
the classifier fix their own way, and stop gracefully, releasing their leases.

- In process, the fix is a swap of the processor's classifier (or a ``POST
  /deploy`` to the HTTP handler).
- With watcher processes, the fix is a rolling restart, as a Deployment would
  do it: start a watcher with classifier v2, wait for its heartbeat, stop an
  old one (SIGTERM: it finishes in-flight items and releases its leases, which
  the others take at their next pass). With ``--handler`` the processes stay
  and the handler is redeployed instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from feedwatch.demo import handler as handler_api
from feedwatch.demo.processor import DemoProcessor
from feedwatch.engine import Watcher
from feedwatch.processors.base import Processor
from feedwatch.serving import build_processor
from feedwatch.settings import WatcherSettings
from feedwatch.store import Store

Say = Callable[[str], None]

#: Settings of the demo's watchers: quick passes, and frequent renewals (where
#: a watcher sees that another asked it for a partition, and hands it off), so
#: that balancing shows within the few seconds the demo lasts.
POLL_INTERVAL = 0.2
LEASE_DURATION = 6.0
RENEW_INTERVAL = 0.5
#: Processor calls in flight per watcher: the classifier mostly waits (like a
#: call to an OCR service), so more calls in flight means more items per second.
CONCURRENCY = 64
GRACE_PERIOD = 5.0
_OWNER_PID = re.compile(r"-(\d+)-[0-9a-f]{8}$")


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def demo_settings() -> WatcherSettings:
    return WatcherSettings(
        poll_interval=POLL_INTERVAL, lease_duration=LEASE_DURATION, renew_interval=RENEW_INTERVAL,
        grace_period=GRACE_PERIOD, health_port=0, concurrency=CONCURRENCY,
    )  # fmt: skip


class InProcessWatchers:
    """One :class:`~feedwatch.Watcher` on the demo's own event loop."""

    def __init__(self, store: Store, feed: str, handler: str | None) -> None:
        self.store, self.feed, self.handler = store, feed, handler
        self.settings = demo_settings()
        self.processor: Processor = (
            build_processor(feed, self.settings, handler=handler, processor=None)
            if handler
            else DemoProcessor(store, classifier="v1")
        )
        self.watcher: Watcher | None = None
        self._task: asyncio.Task[None] | None = None

    def describe(self) -> list[str]:
        what = f"HTTP handler {self.handler}" if self.handler else "the demo processor (classifier v1)"
        owner = self.watcher.owner if self.watcher else "?"
        return [f"watcher w1 runs in this process ({owner}), calling {what}"]

    def join(self, say: Say) -> None:
        """One watcher: nobody joins."""

    async def start(self, say: Say) -> None:
        self.watcher = Watcher(self.store, self.feed, self.processor, self.settings)
        await self.watcher.start()
        self._task = asyncio.create_task(self.watcher.run(handle_signals=False), name="demo:watcher")

    def label(self, owner: str | None) -> str:
        if owner is None:
            return "-"
        return "w1" if self.watcher is not None and owner == self.watcher.owner else owner[-12:]

    def check(self) -> None:
        if self._task is not None and self._task.done():
            error = None if self._task.cancelled() else self._task.exception()
            raise DemoError(f"the watcher stopped unexpectedly: {error or 'no error given'}")

    async def deploy_fix(self, say: Say) -> None:
        if self.handler:
            await asyncio.to_thread(handler_api.deploy, self.handler, "v2")
            say(f"deployed: the handler at {self.handler} now runs classifier v2 (POST /deploy)")
            return
        if isinstance(self.processor, DemoProcessor):
            self.processor.classifier = "v2"
        say("deployed: the in-process watcher's processor now runs classifier v2")

    async def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.request_stop()
            if self._task is not None:
                await asyncio.gather(self._task, return_exceptions=True)
            await self.watcher.stop()
        close = getattr(self.processor, "close", None)
        if close is not None:
            await close()


@dataclass
class _Process:
    label: str
    classifier: str
    popen: subprocess.Popen[bytes]
    log: Path
    stopping: bool = False
    log_file: IO[bytes] | None = field(default=None, repr=False)


class ProcessWatchers:
    """``count`` processes of ``python -m feedwatch watch``, set up by ``FEEDWATCH_*`` variables."""

    def __init__(
        self,
        store: Store,
        *,
        url: str,
        feed: str,
        count: int,
        handler: str | None,
        logs: Path,
        prefix: str = "",
    ) -> None:
        self.store, self.url, self.prefix, self.feed = store, url, prefix, feed
        self.count, self.handler, self.logs = count, handler, logs
        self.processes: list[_Process] = []
        self._by_pid: dict[int, str] = {}
        self._joining: asyncio.Task[None] | None = None

    def describe(self) -> list[str]:
        what = f"--handler {self.handler}" if self.handler else "--processor feedwatch.demo:DemoProcessor"
        return [
            f"watcher {p.label}: pid {p.popen.pid}, `python -m feedwatch watch {what}`"
            + ("" if self.handler else f" with classifier {p.classifier}")
            + f", log {p.log}"
            for p in self.processes
            if not p.stopping
        ]

    def _environment(self, classifier: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            # The environment, not argv: it keeps a password out of `ps`.
            "FEEDWATCH_DATABASE_URL": self.url,
            "FEEDWATCH_TABLE_PREFIX": self.prefix,
            "FEEDWATCH_FEED": self.feed,
            "FEEDWATCH_POLL_INTERVAL": str(POLL_INTERVAL),
            "FEEDWATCH_LEASE_DURATION": str(LEASE_DURATION),
            "FEEDWATCH_RENEW_INTERVAL": str(RENEW_INTERVAL),
            "FEEDWATCH_CONCURRENCY": str(CONCURRENCY),
            "FEEDWATCH_GRACE_PERIOD": str(GRACE_PERIOD),
            "FEEDWATCH_HEALTH_PORT": "0",
            "FEEDWATCH_LOG_LEVEL": "INFO",
            "FEEDWATCH_DEMO_CLASSIFIER": classifier,
        })  # fmt: skip
        env.pop("FEEDWATCH_HANDLER", None)
        env.pop("FEEDWATCH_PROCESSOR", None)
        if self.handler:
            env["FEEDWATCH_HANDLER"] = self.handler
        else:
            env["FEEDWATCH_PROCESSOR"] = "feedwatch.demo:DemoProcessor"
        return env

    def _spawn(self, classifier: str) -> _Process:
        label = f"w{len(self.processes) + 1}"
        log = self.logs / f"watcher-{label}.log"
        log_file = log.open("ab")
        popen = subprocess.Popen(
            [sys.executable, "-m", "feedwatch", "watch"],
            env=self._environment(classifier),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        process = _Process(label, classifier, popen, log, log_file=log_file)
        self.processes.append(process)
        self._by_pid[popen.pid] = label
        return process

    async def _wait_for_heartbeats(self, started: list[_Process]) -> None:
        timeout = 60.0
        deadline = time.monotonic() + timeout
        wanted = {p.popen.pid for p in started}
        while True:
            self.check()
            owners = await asyncio.to_thread(self.store.live_watchers, self.feed, self.store.now())
            alive = {self._pid(o) for o in owners}
            if wanted <= alive:
                return
            if time.monotonic() > deadline:
                missing = ", ".join(p.label for p in started if p.popen.pid not in alive)
                raise DemoError(f"watcher(s) {missing} did not start within {timeout:g} s; see {self.logs}")
            await asyncio.sleep(0.1)

    async def start(self, say: Say) -> None:
        """Start w1 alone: it takes every posting; the others join once there is work."""
        await self._wait_for_heartbeats([self._spawn("v1")])

    def join(self, say: Say) -> None:
        """Start w2..wN: they join w1, ask for partitions, and get some by hand-off."""
        if self.count == 1:
            return
        started = [self._spawn("v1") for _ in range(self.count - 1)]
        say(
            f"starting {', '.join(p.label for p in started)}: they join w1, which holds every "
            "posting, and ask it for partitions (work stealing: w1 hands them off)"
        )

        async def joining() -> None:
            await self._wait_for_heartbeats(started)
            for p in started:
                say(f"{p.label} (pid {p.popen.pid}) is up")

        self._joining = asyncio.create_task(joining(), name="demo:joining")

    @staticmethod
    def _pid(owner: str) -> int | None:
        match = _OWNER_PID.search(owner)
        return int(match.group(1)) if match else None

    def label(self, owner: str | None) -> str:
        if owner is None:
            return "-"
        pid = self._pid(owner)
        return self._by_pid.get(pid, owner[-12:]) if pid is not None else owner[-12:]

    def check(self) -> None:
        if self._joining is not None and self._joining.done():
            self._joining.result()  # raises why a watcher did not start
        for p in self.processes:
            code = p.popen.poll()
            if code is not None and not p.stopping:
                tail = _tail(p.log)
                raise DemoError(f"watcher {p.label} (pid {p.popen.pid}) exited with {code}:\n{tail}")

    async def deploy_fix(self, say: Say) -> None:
        if self.handler:
            await asyncio.to_thread(handler_api.deploy, self.handler, "v2")
            say(f"deployed: the handler at {self.handler} now runs classifier v2 (POST /deploy)")
            return
        old = [p for p in self.processes if not p.stopping]
        new = [self._spawn("v2") for _ in old]
        say(
            f"rolling update: starting {', '.join(p.label for p in new)} with classifier v2, then "
            "stopping the v1 watchers one at a time, the busiest first (SIGTERM: a watcher "
            "finishes its in-flight items and releases its leases; the others take them)"
        )
        if self._joining is not None:
            await self._joining
        await self._wait_for_heartbeats(new)
        say(f"{', '.join(f'{p.label} (pid {p.popen.pid})' for p in new)} are up with classifier v2")
        while old:
            loads = await asyncio.to_thread(self.store.owner_loads, self.feed, self.store.now())
            held = {self.label(owner): n for owner, n in loads.items()}
            process = max(old, key=lambda p: (held.get(p.label, 0), -old.index(p)))
            old.remove(process)
            say(f"stopping {process.label} (holds {held.get(process.label, 0)} posting(s))")
            await self._terminate(process)
            say(f"{process.label} stopped")
        say("deployed: every watcher runs classifier v2")

    async def _terminate(self, process: _Process) -> None:
        process.stopping = True
        if process.popen.poll() is None:
            process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE_PERIOD + 15
        while process.popen.poll() is None:
            if time.monotonic() > deadline:
                process.popen.kill()
                await asyncio.to_thread(process.popen.wait, 10)
                break
            await asyncio.sleep(0.05)
        if process.log_file is not None:
            process.log_file.close()

    async def stop(self) -> None:
        await asyncio.gather(*(self._terminate(p) for p in self.processes if p.popen.returncode is None))
        for p in self.processes:
            if p.log_file is not None and not p.log_file.closed:
                p.log_file.close()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


Watchers = InProcessWatchers | ProcessWatchers
