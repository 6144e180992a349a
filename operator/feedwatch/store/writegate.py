"""SQLite's writers queue on a lock file, so the lock passes on at once.

SQLite admits one writer at a time. A writer that finds the database locked
sleeps in SQLite's busy handler in steps of 1, 2, 5, 10 ... 100 ms and then
looks again, so with two watchers taking turns the waiting one sleeps long
after the lock is free: measured on scenario 1 (100 x 100 items, 2 watchers),
the watchers spent twice as long in ``BEGIN IMMEDIATE`` as in every statement
of their claims and commits together.

A write transaction of feedwatch's first takes the gate: a lock shared by the
threads of a process, then an exclusive ``flock`` on ``<database>-writers``,
which the kernel hands to the next waiting process the moment it is let go.
The gate only orders feedwatch's own writers; SQLite's lock still decides, so
another program writing the file (the ``sqlite3`` shell) stays safe and is
merely not queued. A writer frozen inside its transaction (SIGSTOP) holds the
gate as it holds SQLite's lock: nobody writes until it resumes or dies (the
kernel drops the ``flock`` of a dead process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import ClassVar


class WriteGate:
    """One per database file and process (:meth:`for_file`); re-entrant within a thread."""

    _gates: ClassVar[dict[str, WriteGate]] = {}
    _made = threading.Lock()

    def __init__(self, path: str) -> None:
        self.path = f"{path}-writers"
        self._threads = threading.RLock()
        self._depth = 0
        self._fd: int | None = None
        self._pid = 0  # a forked child opens its own: a shared descriptor would share the lock

    @classmethod
    def for_file(cls, database: str | None) -> WriteGate | None:
        """The gate of a database file; ``None`` for an in-memory database (one connection, no rivals)."""
        if not database or database == ":memory:" or database.startswith("file::memory:"):
            return None
        key = os.path.realpath(database)
        with cls._made:
            gate = cls._gates.get(key)
            if gate is None:
                gate = cls._gates[key] = cls(key)
            return gate

    def held(self) -> AbstractContextManager[None]:
        """Hold the gate for one write transaction."""
        return self._hold()

    @contextlib.contextmanager
    def _hold(self) -> Iterator[None]:
        with self._threads:
            self._depth += 1
            try:
                if self._depth == 1:
                    self._lock_file()
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _lock_file(self) -> None:
        if self._pid != os.getpid():
            self._pid, self._fd = os.getpid(), None
            try:
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError:
                return  # a read-only folder: SQLite alone orders the writers (and refuses them)
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:  # a file system without flock: SQLite alone orders the writers
                os.close(self._fd)
                self._fd = None
