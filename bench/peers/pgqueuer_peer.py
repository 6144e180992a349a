"""PgQueuer on PostgreSQL: independent jobs (it has no fan-in).

Documented fast settings (PgQueuer docs, "PgQueuer" and "Performance"):
dequeue in batches (``batch_size`` 100), LISTEN/NOTIFY wake-ups (its
default), no concurrency limit per entrypoint, async entrypoints; the tables
stay logged (``durability`` left at its default: feedwatch's are logged too).
"""

from __future__ import annotations

import asyncio
import sys
from datetime import timedelta

from bench.peers.workload import Context, item_body, libpq, python

DATABASES = ("postgresql",)
FANIN = False
WORKERS = 2
BATCH = 100


def describe(database: str) -> str:
    from importlib.metadata import version

    return (
        f"PgQueuer {version('pgqueuer')}, psycopg driver, {WORKERS} worker processes, batch_size {BATCH}, "
        "async entrypoint, LISTEN/NOTIFY, durable tables; independent jobs (no fan-in)"
    )


async def _enqueue(ctx: Context) -> None:
    import psycopg
    from pgqueuer import PsycopgDriver, Queries

    async with await psycopg.AsyncConnection.connect(libpq(ctx.url), autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        await queries.install()
        jobs = [f"{p} {n}".encode() for p in range(ctx.partitions) for n in range(ctx.items)]
        for start in range(0, len(jobs), 1000):
            chunk = jobs[start : start + 1000]
            await queries.enqueue(["item"] * len(chunk), list(chunk), [0] * len(chunk))


def drive(ctx: Context) -> None:
    asyncio.run(_enqueue(ctx))
    for k in range(WORKERS):
        ctx.spawn(python("bench.peers.pgqueuer_peer", ctx.url), f"worker{k}")
    ctx.wait()


async def worker(url: str) -> None:
    import psycopg
    from pgqueuer import PgQueuer, PsycopgDriver
    from pgqueuer.models import Job

    conn = await psycopg.AsyncConnection.connect(libpq(url), autocommit=True)
    pgq = PgQueuer(PsycopgDriver(conn))

    @pgq.entrypoint("item")
    async def item(job: Job) -> None:
        p, n = (job.payload or b"0 0").split()
        item_body(int(p), int(n))

    await pgq.run(dequeue_timeout=timedelta(seconds=1), batch_size=BATCH)


if __name__ == "__main__":
    asyncio.run(worker(sys.argv[1]))
