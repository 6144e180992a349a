"""huey (SqliteHuey) on SQLite: a chord per partition (``group(items).then(fan_in)``).

Documented fast settings (huey docs, "Consumer" and "SqliteHuey"): WAL
journal, no fsync, 8 thread workers (at full size: processes x 2 or x 4 and
threads x 4 or x 16 were slower), short polling (initial delay 1 ms, max
10 ms), no periodic tasks, ``results=False`` (no result row per task: 3.0-3.3k
-> 4.0-4.2k tasks/s; a chord still collects its members' results).
"""

from __future__ import annotations

import os
from typing import Any

from huey import SqliteHuey, group  # type: ignore[import-untyped]

from bench.peers.workload import Context, fanin_body, item_body, python

DATABASES = ("sqlite",)
FANIN = True
WORKERS = 8
CONSUMER = {
    "workers": WORKERS,
    "worker_type": "thread",
    "initial_delay": 0.001,
    "max_delay": 0.01,
    "backoff": 1.05,
    "periodic": False,
    "check_worker_health": False,
}
URL_ENV = "BENCH_PEER_HUEY_FILE"


def describe(database: str) -> str:
    return (
        f"huey {_version()} SqliteHuey (WAL, fsync off), 1 consumer process, {WORKERS} thread workers, "
        "polling 1-10 ms, periodic off, results off; fan-in: group(items).then(fan_in) (a chord)"
    )


def _version() -> str:
    from importlib.metadata import version

    return version("huey")


huey = SqliteHuey(
    "bench-peers",
    filename=os.environ.get(URL_ENV, ":memory:"),  # the worker gets the file in its environment
    journal_mode="wal",
    fsync=False,
    results=False,
)


@huey.task()  # type: ignore[untyped-decorator]
def item_task(partition: int, n: int) -> int:
    return item_body(partition, n)


@huey.task()  # type: ignore[untyped-decorator]
def fanin_task(*_results: Any, partition: int) -> int:
    return fanin_body(partition)


def drive(ctx: Context) -> None:
    path = ctx.url.removeprefix("sqlite:///")
    os.environ[URL_ENV] = path
    huey.storage_kwargs["filename"] = path
    huey.storage = huey.create_storage()
    for p in range(ctx.partitions):
        chord = group([item_task.s(p, n) for n in range(ctx.items)]).then(fanin_task, partition=p)
        huey.enqueue(chord)
    ctx.spawn(python("bench.peers.huey_peer"), "consumer")
    ctx.wait()


def worker() -> None:
    huey.create_consumer(**CONSUMER).run()


if __name__ == "__main__":
    import importlib

    # The tasks under their module's name, not __main__'s.
    importlib.import_module("bench.peers.huey_peer").worker()
