"""What every scenario needs: databases, feeds, watcher processes, CPU accounting.

Watchers are real ``feedwatch watch`` subprocesses. Figures come from the
database (timestamps the engine wrote) and from psutil, never from the
watchers' own logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import delete, func, select, text

from feedwatch import Feed, Store, migrate

ROOT = Path(__file__).resolve().parents[1]

MARIADB_URL = os.environ.get(
    "FEEDWATCH_BENCH_MARIADB_URL",
    os.environ.get(
        "FEEDWATCH_TEST_MARIADB_URL", "mysql+pymysql://feedwatch:feedwatch@127.0.0.1:13306/feedwatch"
    ),
)
POSTGRES_URL = os.environ.get(
    "FEEDWATCH_BENCH_POSTGRES_URL",
    os.environ.get(
        "FEEDWATCH_TEST_POSTGRES_URL",
        "postgresql+psycopg://feedwatch:feedwatch@127.0.0.1:15432/feedwatch",
    ),
)
DATABASES = ("sqlite", "mariadb", "postgresql")
LABELS = {"sqlite": "SQLite", "mariadb": "MariaDB", "postgresql": "PostgreSQL"}


# -- databases ---------------------------------------------------------------


class Database:
    """One benchmark database: its URL, a store for the bench process, cleanup."""

    def __init__(self, name: str, workdir: Path) -> None:
        self.name = name
        self.label = LABELS[name]
        if name == "sqlite":
            self.url = f"sqlite:///{workdir / 'bench.db'}"
        else:
            self.url = MARIADB_URL if name == "mariadb" else POSTGRES_URL
        migrate(self.url)
        self.store = Store.open(self.url, pool_size=4)
        self.feeds: list[str] = []

    def new_feed(self, tag: str, **settings: Any) -> Feed:
        name = f"bench-{tag}-{uuid.uuid4().hex[:8]}"
        self.feeds.append(name)
        return Feed.create(self.store, name, **settings)

    def now(self) -> datetime:
        return self.store.now()

    def server_processes(self) -> list[psutil.Process]:
        """The database server's processes (for CPU accounting); none for SQLite."""
        wanted = {"mariadb": ("mariadbd", "mysqld"), "postgresql": ("postgres",)}.get(self.name, ())
        procs = []
        for proc in psutil.process_iter(["name"]):
            if proc.info["name"] in wanted:
                procs.append(proc)
        return procs

    def version(self) -> str:
        if self.name == "sqlite":
            import sqlite3

            return f"SQLite {sqlite3.sqlite_version}"
        with self.store.engine.connect() as conn:
            return str(conn.execute(text("SELECT version()")).scalar()).split(" on ")[0]

    def drop_feed(self, name: str) -> None:
        """Delete a benchmark feed and everything in it (any status), in chunks."""
        t = self.store.tables
        p, i, h, hb, f = t.partitions, t.items, t.history, t.heartbeats, t.feeds
        while True:
            with self.store.engine.begin() as conn:
                pks = [r[0] for r in conn.execute(select(p.c.pk).where(p.c.feed == name).limit(5000))]
                if not pks:
                    break
                conn.execute(delete(i).where(i.c.partition_pk.in_(pks)))
                conn.execute(delete(p).where(p.c.pk.in_(pks)))
        while True:
            with self.store.engine.begin() as conn:
                pks = [r[0] for r in conn.execute(select(h.c.pk).where(h.c.feed == name).limit(20000))]
                if not pks:
                    break
                conn.execute(delete(h).where(h.c.pk.in_(pks)))
        with self.store.engine.begin() as conn:
            conn.execute(delete(hb).where(hb.c.feed == name))
            conn.execute(delete(f).where(f.c.name == name))

    def cleanup(self) -> None:
        for name in self.feeds:
            try:
                self.drop_feed(name)
            except Exception as error:
                print(f"  warning: could not clean up feed {name} on {self.label}: {error}")
        self.feeds.clear()

    def close(self) -> None:
        self.store.close()

    # -- reading results back ----------------------------------------------

    def counts(self, feed: str) -> dict[str, int]:
        return self.store.feed_counts(feed)

    def items_done(self, feed: str) -> int:
        """A number that grows with every item result: gates passed plus items finished."""
        from sqlalchemy import case

        t = self.store.tables
        query = (
            select(func.sum(t.items.c.gate) + func.sum(case((t.items.c.status != "available", 1), else_=0)))
            .select_from(t.items.join(t.partitions, t.partitions.c.pk == t.items.c.partition_pk))
            .where(t.partitions.c.feed == feed)
        )
        with self.store.engine.connect() as conn:
            return int(conn.execute(query).scalar() or 0)

    def last_complete(self, feed: str) -> datetime | None:
        p = self.store.tables.partitions
        query = select(func.max(p.c.updated_at)).where(p.c.feed == feed, p.c.status == "complete")
        with self.store.engine.connect() as conn:
            return conn.execute(query).scalar()

    def history_events(self, feed: str, event: str, *, gate: int | None = None) -> list[Any]:
        h = self.store.tables.history
        query = select(h.c.partition_pk, h.c.item_pk, h.c.owner, h.c.gate, h.c.at).where(
            h.c.feed == feed, h.c.event == event
        )
        if gate is not None:
            query = query.where(h.c.gate == gate)
        with self.store.engine.connect() as conn:
            return list(conn.execute(query))

    def first_per_partition(self, feed: str, event: str, gate: int | None = None) -> dict[int, datetime]:
        return self._per_partition(feed, event, gate, func.min)

    def last_per_partition(self, feed: str, event: str, gate: int | None = None) -> dict[int, datetime]:
        return self._per_partition(feed, event, gate, func.max)

    def _per_partition(self, feed: str, event: str, gate: int | None, agg: Any) -> dict[int, datetime]:
        h = self.store.tables.history
        query = (
            select(h.c.partition_pk, agg(h.c.at))
            .where(h.c.feed == feed, h.c.event == event)
            .group_by(h.c.partition_pk)
        )
        if gate is not None:
            query = query.where(h.c.gate == gate)
        with self.store.engine.connect() as conn:
            return {r[0]: _naive(r[1]) for r in conn.execute(query)}

    def owners(self, feed: str) -> dict[int, str | None]:
        p = self.store.tables.partitions
        with self.store.engine.connect() as conn:
            return {r[0]: r[1] for r in conn.execute(select(p.c.pk, p.c.owner).where(p.c.feed == feed))}


def _naive(value: Any) -> datetime:
    if isinstance(value, str):  # SQLite through a raw aggregate
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=None) if value.tzinfo else value


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)


# -- bulk setup ----------------------------------------------------------------


def bulk_partitions(
    db: Database, feed: str, count: int, *, ready_at: datetime | None, items: int = 0, prefix: str = "w"
) -> None:
    """Insert ``count`` partitions straight into the tables (fast setup of idle backlogs).

    The producer API would take one transaction per partition; for 100,000
    idle partitions the benchmark writes the rows the API would write.
    """
    t = db.store.tables
    now = db.now()
    chunk = 5000
    for start in range(0, count, chunk):
        rows = [
            {
                "feed": feed,
                "id": f"{prefix}{n}",
                "status": "available",
                "gate": 0,
                "version": 1,
                "ready_at": ready_at,
                "lease_epoch": 0,
                "created_at": now,
                "updated_at": now,
            }
            for n in range(start, min(start + chunk, count))
        ]
        with db.store.engine.begin() as conn:
            conn.execute(t.partitions.insert(), rows)
            if items:
                ids = [
                    r[0]
                    for r in conn.execute(
                        select(t.partitions.c.pk).where(
                            t.partitions.c.feed == feed,
                            t.partitions.c.id.in_([r["id"] for r in rows]),
                        )
                    )
                ]
                far = ready_at or now + timedelta(days=365)
                conn.execute(
                    t.items.insert(),
                    [
                        {
                            "partition_pk": pk,
                            "id": f"i{k}",
                            "status": "available",
                            "gate": 0,
                            "version": 0,
                            "data": b"{}",
                            "content_type": "application/json",
                            "input_hash": "x",
                            "attempts": 0,
                            "failures": 0,
                            "polls": 0,
                            "unanswered": 0,
                            "next_attempt_at": far,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for pk in ids
                        for k in range(items)
                    ],
                )


# -- watcher processes ---------------------------------------------------------


@dataclass
class WatcherConfig:
    """Watcher-local flags; ``None`` leaves the engine default."""

    concurrency: int | None = None
    batch_size: int | None = None
    poll_interval: float | None = None
    commit_interval: float | None = None
    lease_duration: float | None = None
    grace_period: float | None = None
    label: str = "defaults"

    def args(self) -> list[str]:
        out: list[str] = []
        for name in (
            "concurrency",
            "batch_size",
            "poll_interval",
            "commit_interval",
            "lease_duration",
            "grace_period",
        ):
            value = getattr(self, name)
            if value is not None:
                out += ["--" + name.replace("_", "-"), str(value)]
        return out

    def describe(self) -> str:
        from feedwatch import WatcherSettings

        d = WatcherSettings()
        return (
            f"concurrency {self.concurrency or d.concurrency}, batch {self.batch_size or d.batch_size}, "
            f"poll {self.poll_interval or d.poll_interval:g} s, "
            f"commit interval {self.commit_interval or d.commit_interval:g} s, "
            f"lease {self.lease_duration or d.lease_duration:g} s"
        )


TUNED = WatcherConfig(
    concurrency=1000,
    batch_size=500,
    poll_interval=0.05,
    commit_interval=0.02,  # 0.005 until issue 18: as fast in scenario 1, faster through HTTP
    lease_duration=10,
    label="tuned",
)
DEFAULTS = WatcherConfig(label="defaults")


@dataclass
class Watchers:
    """Running ``feedwatch watch`` processes of one feed."""

    procs: list[subprocess.Popen[bytes]]
    mark_dir: Path
    logs: list[Path]
    ps: list[psutil.Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.ps = [psutil.Process(p.pid) for p in self.procs]

    def first_call(self) -> datetime | None:
        """Wall clock (naive UTC) of the earliest first processor call of any watcher."""
        stamps = [float(f.read_text()) for f in self.mark_dir.glob("*.first") if f.read_text()]
        return utc_from_epoch(min(stamps)) if stamps else None

    def counts(self) -> dict[str, dict[str, float]]:
        """SQL counters of every watcher (bench.counting), summed per store method."""
        import json

        total: dict[str, dict[str, float]] = {}
        for path in self.mark_dir.glob("counts-*.json"):
            for method, values in json.loads(path.read_text()).items():
                slot = total.setdefault(method, {})
                for key, value in values.items():
                    slot[key] = slot.get(key, 0.0) + value
        return total

    def alive(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise RuntimeError(f"watcher {proc.pid} exited with {proc.returncode}:\n{tail}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(sig)
        for proc in self.procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def engine_source() -> Path:
    """The source root the watchers import feedwatch from (see bench.engine)."""
    from bench import engine

    return engine.source()


def watcher_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(engine_source()), str(ROOT), env.get("PYTHONPATH", "")) if p
    )
    env["FEEDWATCH_HEALTH_PORT"] = "0"
    env.setdefault("FEEDWATCH_LOG_LEVEL", "WARNING")
    env.update(extra or {})
    return env


def start_watchers(
    db: Database,
    feed: str,
    count: int,
    config: WatcherConfig,
    workdir: Path,
    *,
    processor: str = "bench.processors:noop",
    handler: str | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    counts: bool = False,
) -> Watchers:
    """Start ``count`` watchers; with ``counts``, each writes SQL counters (bench.counting)."""
    mark_dir = Path(tempfile.mkdtemp(prefix="marks-", dir=workdir))
    procs, logs = [], []
    module = "bench.counting" if counts else "feedwatch"
    for n in range(count):
        cmd = [*prefix, sys.executable, "-m", module, "watch", "--db", db.url, "--feed", feed]
        cmd += ["--handler", handler] if handler else ["--processor", processor]
        cmd += config.args()
        log = workdir / f"{feed}-{n}.log"
        logs.append(log)
        out = open(log, "ab")  # noqa: SIM115 - the child owns it
        procs.append(
            subprocess.Popen(
                cmd,
                env=watcher_env(
                    {
                        "BENCH_MARK_DIR": str(mark_dir),
                        "BENCH_COUNTS_FILE": str(mark_dir / f"counts-{n}.json"),
                        **(env or {}),
                    }
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        )
        out.close()
    return Watchers(procs, mark_dir, logs)


def wait_for_heartbeats(db: Database, feed: str, count: int, watchers: Watchers, timeout: float = 60) -> None:
    """Until ``count`` watchers of ``feed`` have heartbeated (so targets are shared)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        watchers.check_alive()
        if len(db.store.live_watchers(feed, db.now())) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{count} watchers did not heartbeat within {timeout} s")


# -- CPU accounting --------------------------------------------------------------


class CpuMeter:
    """CPU seconds (user + system) of named process groups over a window, with psutil.

    The database server is every process of its name (PostgreSQL forks a
    backend per connection: those that start during the window count from
    zero). ``other`` is the machine's busy time not accounted to any group:
    everything else running on the two cores at the time.
    """

    def __init__(self, groups: dict[str, list[psutil.Process]], server: Database | None) -> None:
        self.groups = groups
        self.server = server
        self.start_times: dict[tuple[str, int], float] = {}
        self.end_times: dict[tuple[str, int], float] = {}
        self.t0 = self.t1 = 0.0
        self.sys0: Any = None
        self.sys1: Any = None

    def _sample(self) -> dict[tuple[str, int], float]:
        out: dict[tuple[str, int], float] = {}
        groups = dict(self.groups)
        if self.server is not None:
            groups["database server"] = self.server.server_processes()
        groups["bench (producer, measurer)"] = [psutil.Process()]
        for name, procs in groups.items():
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    t = proc.cpu_times()
                    out[(name, proc.pid)] = t.user + t.system
        return out

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.sys0 = psutil.cpu_times()
        self.start_times = self._sample()

    def stop(self) -> None:
        self.t1 = time.monotonic()
        self.sys1 = psutil.cpu_times()
        self.end_times = self._sample()

    def result(self) -> dict[str, float]:
        """CPU seconds per group over the window; ``wall`` and ``other`` included."""
        totals: dict[str, float] = {}
        for key, end in self.end_times.items():
            begin = self.start_times.get(key, 0.0)
            totals[key[0]] = totals.get(key[0], 0.0) + max(end - begin, 0.0)
        busy = _busy(self.sys1) - _busy(self.sys0)
        totals["other (not ours)"] = max(busy - sum(totals.values()), 0.0)
        totals["wall"] = self.t1 - self.t0
        return totals


def _busy(t: Any) -> float:
    return float(
        t.user + t.system + t.nice + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
    )


class RssSampler:
    """Peak resident memory of processes, sampled in a background thread."""

    def __init__(self, procs: list[psutil.Process], interval: float = 0.1) -> None:
        import threading

        self.procs = procs
        self.peak: dict[int, int] = {p.pid: 0 for p in procs}
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in self.procs:
                with contextlib.suppress(psutil.Error):
                    rss = proc.memory_info().rss
                    self.peak[proc.pid] = max(self.peak[proc.pid], rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="feedwatch-bench-"))
    try:
        yield path
    finally:
        if not keep:
            import shutil

            shutil.rmtree(path, ignore_errors=True)


def kill_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
