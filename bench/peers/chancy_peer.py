"""chancy workflows on PostgreSQL: a workflow per partition, ``fan_in`` depends on its 100 items.

Documented fast settings (chancy docs, "Queues" and "Workflows"): the
AsyncExecutor (async jobs, no thread or process per job), concurrency 10 per
worker, ``eager_polling`` (fetch again at once when a job finishes), queue
polling 1 s, workflow plugin polling 1 s (default 30 s), leadership polling
1 s (the workflow plugin runs on the leader).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from chancy import Chancy, Queue, Worker, job  # type: ignore[import-untyped]
from chancy.plugins.leadership import Leadership  # type: ignore[import-untyped]
from chancy.plugins.workflow import Workflow, WorkflowPlugin  # type: ignore[import-untyped]

from bench.peers.workload import Context, fanin_body, item_body, libpq, python

DATABASES = ("postgresql",)
FANIN = True
WORKERS = 2
CONCURRENCY = 10


def describe(database: str) -> str:
    from importlib.metadata import version

    return (
        f"chancy {version('chancy')}, {WORKERS} worker processes, AsyncExecutor, concurrency {CONCURRENCY} "
        "per worker, eager polling, queue polling 1 s, workflow plugin polling 1 s, leadership polling 1 s; "
        "fan-in: a workflow per partition, fan_in depends on its items"
    )


@job(queue="bench")  # type: ignore[untyped-decorator]
async def item_job(p: int, n: int) -> None:
    item_body(p, n)


@job(queue="bench")  # type: ignore[untyped-decorator]
async def fanin_job(p: int) -> None:
    fanin_body(p)


def _chancy(url: str) -> Chancy:
    plugins: list[Any] = [Leadership(poll_interval=1, timeout=5), WorkflowPlugin(polling_interval=1)]
    return Chancy(libpq(url), plugins=plugins)


async def _push(ctx: Context) -> None:
    async with _chancy(ctx.url) as chancy:
        await chancy.migrate()
        await chancy.declare(
            Queue(
                "bench",
                concurrency=CONCURRENCY,
                executor=Chancy.Executor.Async,
                polling_interval=1,
                eager_polling=True,
            ),
            upsert=True,
        )
        for p in range(ctx.partitions):
            workflow = Workflow(f"partition-{p}")
            steps = [f"item-{n}" for n in range(ctx.items)]
            for n, step in enumerate(steps):
                workflow.add(step, item_job.job.with_kwargs(p=p, n=n))
            workflow.add("fan_in", fanin_job.job.with_kwargs(p=p), steps)
            await WorkflowPlugin.push(chancy, workflow)


def drive(ctx: Context) -> None:
    asyncio.run(_push(ctx))
    for k in range(WORKERS):
        ctx.spawn(python("bench.peers.chancy_peer", ctx.url), f"worker{k}")
    ctx.wait()


async def worker(url: str) -> None:
    async with _chancy(url) as chancy, Worker(chancy) as w:
        await w.wait_for_shutdown()


if __name__ == "__main__":
    asyncio.run(worker(sys.argv[1]))
