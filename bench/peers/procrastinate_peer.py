"""procrastinate on PostgreSQL: independent jobs (it has no fan-in).

Documented fast settings (procrastinate docs, "Launch a worker"): async
tasks, worker ``concurrency`` 10, LISTEN/NOTIFY on, job polling 0.1 s, and
``delete_jobs="successful"`` so the jobs table does not grow with done rows.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import procrastinate

from bench.peers.workload import Context, item_body, libpq, python

DATABASES = ("postgresql",)
FANIN = False
WORKERS = 2
CONCURRENCY = 10


async def _item(p: int, n: int) -> None:
    item_body(p, n)


def make_app(url: str) -> procrastinate.App:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=libpq(url)))
    app.task(name="item")(_item)
    return app


def describe(database: str) -> str:
    from importlib.metadata import version

    return (
        f"procrastinate {version('procrastinate')}, {WORKERS} worker processes, concurrency {CONCURRENCY} "
        "each, async task, LISTEN/NOTIFY, polling 0.1 s, delete_jobs successful; independent jobs "
        "(no fan-in)"
    )


async def _enqueue(ctx: Context) -> None:
    app = make_app(ctx.url)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        jobs: list[dict[str, Any]] = [
            {"p": p, "n": n} for p in range(ctx.partitions) for n in range(ctx.items)
        ]
        for start in range(0, len(jobs), 1000):
            await app.tasks["item"].batch_defer_async(*jobs[start : start + 1000])


def drive(ctx: Context) -> None:
    asyncio.run(_enqueue(ctx))
    for k in range(WORKERS):
        ctx.spawn(python("bench.peers.procrastinate_peer", ctx.url), f"worker{k}")
    ctx.wait()


async def worker(url: str) -> None:
    app = make_app(url)
    async with app.open_async():
        await app.run_worker_async(
            concurrency=CONCURRENCY,
            fetch_job_polling_interval=0.1,
            listen_notify=True,
            delete_jobs="successful",
        )


if __name__ == "__main__":
    asyncio.run(worker(sys.argv[1]))
