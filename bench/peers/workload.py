"""The workload every peer runs: the task bodies, the timing log, the driver's context.

Every peer runs the same workload: ``partitions`` x ``items`` item tasks, and
per partition one fan-in task that may start only after all its items
finished (or, for the peers without fan-in, the items alone as independent
jobs). The task bodies do a trivial computation and append one line to a
shared log file (``O_APPEND``: one ``write`` per line, so lines from many
processes do not interleave): kind, partition, start and end (``time.time()``).
The figures come from that log, the same way for every peer, never from a
peer's own bookkeeping.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LOG_ENV = "BENCH_PEER_LOG"
ITEM, FANIN = "i", "f"

_fds: dict[str, int] = {}


def _log_fd() -> int:
    path = os.environ[LOG_ENV]
    if path not in _fds:
        _fds[path] = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    return _fds[path]


def item_body(partition: int, n: int) -> int:
    """The item task: a trivial computation, then its line in the log."""
    started = time.time()
    value = (partition * 31 + n) % 7
    os.write(_log_fd(), f"{ITEM} {partition} {started:.6f} {time.time():.6f}\n".encode())
    return value


def fanin_body(partition: int) -> int:
    """The fan-in task of a partition (runs after its items)."""
    started = time.time()
    os.write(_log_fd(), f"{FANIN} {partition} {started:.6f} {time.time():.6f}\n".encode())
    return partition


@dataclass
class Context:
    """What a peer's driver gets: where to run, how much, and how to start workers."""

    peer: str
    database: str  # sqlite, mariadb or postgresql
    url: str  # a SQLAlchemy URL of a fresh database (or SQLite file) for this peer alone
    partitions: int
    items: int
    fanin: bool
    work: Path
    log: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def expected(self) -> int:
        return self.partitions * self.items + (self.partitions if self.fanin else 0)

    def spawn(self, args: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        """A worker subprocess (in the driver's session: the runner's timeout kills it too)."""
        env = dict(os.environ)
        env[LOG_ENV] = str(self.log)
        out = open(self.work / f"{self.peer}-{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(list(args), env=env, stdout=out, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def done(self) -> int:
        try:
            with open(self.log, "rb") as f:
                return sum(1 for _ in f)
        except FileNotFoundError:
            return 0

    def wait(self, poll: float = 0.05) -> None:
        """Until every task has logged its line (the runner's timeout bounds it)."""
        while self.done() < self.expected:
            for proc in self.workers:
                if proc.poll() is not None:
                    raise RuntimeError(f"a worker exited with {proc.returncode} before the end")
            time.sleep(poll)

    def stop_workers(self, grace: float = 10.0) -> None:
        import signal

        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def sync_url(url: str, driver: str) -> str:
    """The URL with another SQLAlchemy driver (``postgresql+psycopg`` -> ``postgresql``, etc.)."""
    scheme, _, rest = url.partition("://")
    base = scheme.split("+")[0]
    return f"{base}+{driver}://{rest}" if driver else f"{base}://{rest}"


def libpq(url: str) -> str:
    """A libpq conninfo URL (``postgresql://...``) of a SQLAlchemy PostgreSQL URL."""
    return sync_url(url, "")
