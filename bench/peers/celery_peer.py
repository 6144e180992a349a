"""Celery chords with the SQLAlchemy broker (kombu ``sqla+``) and result backend (``db+``).

A chord per partition: ``chord(items, fan_in)``. With a result backend that
is not Redis, Celery decides a chord with its ``chord_unlock`` task, which
polls the backend every ``result_chord_retry_interval``. Documented fast
settings (Celery docs, "Optimizing" and the kombu virtual transport options):
broker polling 10 ms (default 1 s), chord polling 0.1 s (default 1 s),
prefetch multiplier 4, no gossip/mingle/heartbeat, prefork pool with one
process per core, acks early (the default).
"""

from __future__ import annotations

import os
from typing import Any

import kombu.transport.sqlalchemy
from celery import Celery, chord  # type: ignore[import-untyped]

from bench.peers.workload import Context, fanin_body, item_body, python

DATABASES = ("sqlite", "mariadb")
FANIN = True
CONCURRENCY = 2
URL_ENV = "BENCH_PEER_CELERY_URL"
SETTINGS = {
    "result_chord_retry_interval": 0.1,
    "worker_prefetch_multiplier": 4,
    "task_acks_late": False,
    "broker_connection_retry_on_startup": True,
    "worker_hijack_root_logger": False,
}


def describe(database: str) -> str:
    from importlib.metadata import version

    return (
        f"Celery {version('celery')}, kombu {version('kombu')}: SQLAlchemy broker and result backend, "
        f"1 worker, prefork pool x {CONCURRENCY}, broker polling 10 ms, chord_unlock polling 0.1 s, "
        "prefetch multiplier 4, without gossip/mingle/heartbeat; fan-in: chord(items, fan_in)"
    )


# The virtual transports' ``polling_interval`` option (default 1 s): the SQLAlchemy transport
# passes every transport option on to ``create_engine``, so it is set on its class instead.
kombu.transport.sqlalchemy.Transport.polling_interval = 0.01


def make_app(url: str) -> Celery:
    app = Celery("bench_peers", broker=f"sqla+{url}", backend=f"db+{url}")
    app.conf.update(SETTINGS)
    app.task(name="item")(_item)
    app.task(name="fan_in")(_fan_in)
    return app


def _item(p: int, n: int) -> int:
    return item_body(p, n)


def _fan_in(_results: Any, p: int) -> int:
    return fanin_body(p)


app = make_app(os.environ.get(URL_ENV, "sqlite:///:memory:"))


def drive(ctx: Context) -> None:
    os.environ[URL_ENV] = ctx.url
    local = make_app(ctx.url)
    item, fan_in = local.tasks["item"], local.tasks["fan_in"]
    for p in range(ctx.partitions):
        chord([item.s(p, n) for n in range(ctx.items)], fan_in.s(p)).apply_async()
    ctx.spawn(python("bench.peers.celery_peer"), "worker")
    ctx.wait()


WORKER_ARGS = [
    "worker",
    f"--concurrency={CONCURRENCY}",
    "--pool=prefork",
    "--loglevel=WARNING",
    "--without-gossip",
    "--without-mingle",
    "--without-heartbeat",
]

if __name__ == "__main__":
    import importlib

    # The app of the environment's URL, under its module's name.
    importlib.import_module("bench.peers.celery_peer").app.worker_main(WORKER_ARGS)
