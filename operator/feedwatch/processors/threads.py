"""A bounded pool of daemon threads for sync in-process processors.

Python cannot stop a thread. A sync processor that hangs keeps its thread
forever, so it must not run on asyncio's default pool (a handful of threads
shared with everything else, joined when the event loop closes) nor on a
:class:`~concurrent.futures.ThreadPoolExecutor` (whose threads the interpreter
joins at exit): either would let one hung call stall later items or keep
``feedwatch watch`` from exiting after SIGTERM. These threads are daemons,
never joined on shutdown; the process exits around them.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonThreadPool(Executor):
    """At most ``size`` daemon threads, started on demand."""

    def __init__(self, size: int, name: str = "feedwatch-processor") -> None:
        if size < 1:
            raise ValueError(f"a thread pool needs at least 1 thread, not {size}")
        self.size = size
        self.name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._closed = False
        self._busy = 0

    @property
    def busy(self) -> int:
        """Threads running a call now (hung ones included)."""
        return self._busy

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the processor's thread pool is shut down")
            self._work.put((future, fn, args, kwargs))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.size:
                thread = threading.Thread(
                    target=self._run, name=f"{self.name}-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _run(self) -> None:
        while True:
            work = self._work.get()
            if work is None:
                return
            future, fn, args, kwargs = work
            del work
            if future.set_running_or_notify_cancel():
                with self._lock:
                    self._busy += 1
                try:
                    result = fn(*args, **kwargs)
                except BaseException as error:  # SystemExit too: it is the call's, not ours
                    future.set_exception(error)
                else:
                    future.set_result(result)
                finally:
                    with self._lock:
                        self._busy -= 1
                del future, fn, args, kwargs
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking calls; never waits for a call that hangs unless ``wait``."""
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        if cancel_futures:
            while True:
                try:
                    work = self._work.get_nowait()
                except queue.Empty:
                    break
                if work is not None:
                    work[0].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                thread.join()
