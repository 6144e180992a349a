"""DBOS Transact workflows over queues (PostgreSQL and SQLite), in the driver process.

DBOS is a library: the application process runs the workflows and the queue
workers (threads), so the driver is the worker. A workflow per partition
enqueues its 100 item workflows on a queue, waits for their results, then
runs the fan-in step. Documented fast settings (DBOS docs, "Queues" and
"Configuration"): queue polling 50 ms (default 1 s), no concurrency limit,
LISTEN/NOTIFY where the database has it (PostgreSQL), 256 executor threads (a
waiting partition workflow holds a thread) and a system database pool of 64
(at the default 20 the threads wait for connections; a limit of 20 items in
flight instead cut the fan-in latency to ~1 s but not the throughput).
"""

from __future__ import annotations

import time
from typing import Any

from bench.peers.workload import Context, fanin_body, item_body, libpq

DATABASES = ("postgresql", "sqlite")
FANIN = True
POLL = 0.05
THREADS = 256
POOL = 64


def describe(database: str) -> str:
    from importlib.metadata import version

    return (
        f"DBOS Transact {version('dbos')}, 1 process (library: workflows and queue workers run in the "
        f"application process), queue polling {POLL * 1000:.0f} ms, no concurrency limit, "
        f"{THREADS} executor threads, system database pool {POOL}; "
        "fan-in: a workflow per partition enqueues its items and awaits them"
    )


def drive(ctx: Context) -> None:
    from dbos import DBOS

    url = libpq(ctx.url) if ctx.database == "postgresql" else ctx.url
    config: Any = {
        "name": "bench-peers",
        "system_database_url": url,
        "max_executor_threads": THREADS,
        "sys_db_pool_size": POOL,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.workflow(name="item")
    def item_wf(p: int, n: int) -> int:
        return item_body(p, n)

    @DBOS.step(name="fan_in")
    def fanin_step(p: int) -> int:
        return fanin_body(p)

    @DBOS.workflow(name="partition")
    def partition_wf(p: int, count: int) -> int:
        items = DBOS.retrieve_queue("items")
        assert items is not None
        handles = [items.enqueue(item_wf, p, n) for n in range(count)]
        for handle in handles:
            handle.get_result()
        return fanin_step(p)

    DBOS.launch()
    try:
        DBOS.register_queue("items", polling_interval_sec=POLL)
        partitions = DBOS.register_queue("partitions", polling_interval_sec=POLL)
        for p in range(ctx.partitions):
            partitions.enqueue(partition_wf, p, ctx.items)
        ctx.wait()
        time.sleep(0.1)
    finally:
        DBOS.destroy(destroy_registry=True)
