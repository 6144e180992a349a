"""Helpers of the service suite: the CLI as a subprocess, HTTP probes, fresh databases."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import make_url

from feedwatch import Feed, Store, migrate
from feedwatch.store import connect
from feedwatch.testing import assert_invariants, wait_for
from tests.conftest import MARIADB_URL
from tests.support.handler import Handler
from tests.support.ports import free_port
from tests.support.processes import start_watcher, stop, watcher_env

#: The MariaDB server of the tests, without a database (to create and drop fresh ones).
MARIADB_ROOT_URL = make_url(MARIADB_URL).set(database="").render_as_string(hide_password=False)


def cli(
    *args: str,
    env: dict[str, str] | None = None,
    drop_env: Sequence[str] = (),
    stdin: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m feedwatch ARGS`` as a subprocess; never raises on a non-zero exit."""
    environment = watcher_env(env)
    for name in drop_env:
        environment.pop(name, None)
    return subprocess.run(
        [sys.executable, "-m", "feedwatch", *args],
        env=environment,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_parallel(
    commands: Sequence[Sequence[str]], env: dict[str, str] | None = None, timeout: float = 180
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``python -m feedwatch`` commands at once (each costs ~1 s of imports); in order."""
    environment = watcher_env(env)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "feedwatch", *args],
            env=environment,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.returncode == 0, (
        f"{' '.join(result.args[2:])} exited {result.returncode}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result.stdout


def http_get(url: str, timeout: float = 10) -> tuple[int, str]:
    """Status and body of a GET (an HTTP error status is an answer, not an exception)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def answers(url: str) -> tuple[int, str] | None:
    """``http_get`` or None while nothing listens yet."""
    try:
        return http_get(url, timeout=5)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Prometheus samples by (name, sorted labels)."""
    status, body = http_get(url)
    assert status == 200, body
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def sample(values: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def log_text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def start_watch(
    db: str,
    feed: str,
    log: Path,
    *,
    handler: str | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``feedwatch watch`` (tests.support.processes defaults: 2 s leases) logging to ``log``."""
    return start_watcher(db, feed, handler=handler, args=args, env=env, log=log)


@dataclass
class Watched:
    """One ``feedwatch watch`` run over a feed to its end, against the recording handler."""

    handler: Handler
    watcher: subprocess.Popen[bytes]
    log: Path
    health: str  # the watcher's health server: http://127.0.0.1:PORT


@contextmanager
def watched_to_the_end(
    directory: Path, db: str, feed: Feed, *, args: Sequence[str] = (), timeout: float = 60
) -> Iterator[Watched]:
    """Start the handler and one watcher with a health port; wait until no partition of ``feed``
    is available; yield; then stop both and check the feed's invariants."""
    port = free_port()
    log = directory / "watcher.log"
    with Handler(directory) as handler:
        watcher = start_watch(
            db, feed.name, log, handler=handler.url, args=[*args, "--health-port", str(port)]
        )
        try:
            wait_for(
                lambda: all(p.status != "available" for p in feed.partitions()),
                timeout=timeout,
                message=lambda: "every partition to end: " + log_text(log)[-4000:],
            )
            yield Watched(handler, watcher, log, f"http://127.0.0.1:{port}")
        finally:
            stop(watcher)
    assert_invariants(feed.store, feed.name)


def stop_all(*procs: subprocess.Popen[bytes] | None) -> list[int]:
    """SIGTERM every process at once, then wait for each (killing what outlives 30 s)."""
    running = [p for p in procs if p is not None]
    for proc in running:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    return [stop(p) for p in running]


# -- databases -------------------------------------------------------------------


_stores: dict[str, Store] = {}


def store_for(url: str) -> Store:
    """One pooled store per URL for the whole session (closed at exit by the fixture)."""
    if url not in _stores:
        _stores[url] = Store.open(url, pool_size=4)
    return _stores[url]


def close_stores() -> None:
    for store in _stores.values():
        store.close()
    _stores.clear()


def fresh_sqlite(directory: Path, name: str = "fresh.db", *, migrated: bool = True) -> str:
    url = f"sqlite:///{directory / name}"
    if migrated:
        engine = connect(url)
        try:
            migrate(engine)
        finally:
            engine.dispose()
    return url


@contextlib.contextmanager
def fresh_mariadb(prefix: str = "fw_t") -> Iterator[str]:
    """A new, empty MariaDB database (dropped afterwards); yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    root = create_engine(MARIADB_ROOT_URL)
    try:
        with root.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
        yield make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with root.begin() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        root.dispose()


def alembic_revision(url: str) -> str | None:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def set_alembic_revision(url: str, revision: str) -> None:
    engine = connect(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def history(store: Store, feed: str, *, event: str | None = None) -> list[Any]:
    """History rows of a feed, oldest first, with the partition's id as ``partition``."""
    h, p = store.tables.history, store.tables.partitions
    query = (
        select(h, p.c.id.label("partition"))
        .join(p, p.c.pk == h.c.partition_pk)
        .where(h.c.feed == feed)
        .order_by(h.c.pk)
    )
    if event is not None:
        query = query.where(h.c.event == event)
    with store.engine.connect() as conn:
        return list(conn.execute(query).all())


def item_counts(store: Store, feed: str) -> dict[str, int]:
    """Items of a feed per status."""
    from sqlalchemy import func

    i, p = store.tables.items, store.tables.partitions
    query = (
        select(i.c.status, func.count())
        .join(p, p.c.pk == i.c.partition_pk)
        .where(p.c.feed == feed)
        .group_by(i.c.status)
    )
    with store.engine.connect() as conn:
        return {s: int(n) for s, n in conn.execute(query)}


def wait_exit(proc: subprocess.Popen[bytes], timeout: float) -> tuple[int, float]:
    """Wait for a process to exit; return its code and how long it took."""
    started = time.monotonic()
    code = proc.wait(timeout)
    return code, time.monotonic() - started
