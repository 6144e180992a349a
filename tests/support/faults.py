"""The fault harness: a recording handler process, watcher fleets, database servers of its own.

Everything here is real: ``feedwatch watch`` subprocesses (started with
:func:`tests.support.processes.start_watcher`), the HTTP handler of
:mod:`tests.support.handler_recording` as its own process, and ``mariadbd``
and ``postgres`` (as the ``postgres`` user) started from temporary data
directories. Every process is started, signalled and stopped by its PID, and
only processes started here are ever signalled. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psycopg
import pymysql
from sqlalchemy import func, make_url, select, text

from feedwatch import Feed, Store
from feedwatch.testing import wait_for
from tests.support.fault_checks import Call, Expected, read, read_calls
from tests.support.fault_proxy import TCPProxy
from tests.support.ports import free_port
from tests.support.processes import ROOT, start_watcher, stop, watcher_env

#: Watcher flags of the fault suite: short real leases, JSON logs, small batches.
WATCHER_ARGS = (
    "--lease-duration", "2", "--poll-interval", "0.2", "--grace-period", "5",
    "--concurrency", "8", "--batch-size", "20", "--handler-timeout", "2", "--log-format", "json",
)  # fmt: skip


# -- the handler ---------------------------------------------------------------------


class HandlerProcess:
    """The recording HTTP handler, as a process of its own."""

    def __init__(self, workdir: Path, config: dict[str, Any] | None = None) -> None:
        self.log = workdir / "handler-calls.jsonl"
        self.port_file = workdir / "handler.port"
        self.output = workdir / "handler.out"
        self.config = config or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> HandlerProcess:
        cmd = [sys.executable, "-m", "tests.support.handler_recording", "--log", str(self.log),
               "--port-file", str(self.port_file), "--config", json.dumps(self.config)]  # fmt: skip
        with open(self.output, "ab") as out:
            proc = self.proc = subprocess.Popen(cmd, cwd=ROOT, env=watcher_env(), stdout=out, stderr=out)
        wait_for(
            lambda: self.port_file.exists() or proc.poll() is not None,
            timeout=30,
            message="the handler to start",
        )
        assert proc.poll() is None, f"the handler died: {self.output.read_text()[-2000:]}"
        self.port = int(self.port_file.read_text())
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def calls(self, feed: str | None = None) -> list[Call]:
        return read_calls(self.log, feed)

    def calling(self, watcher: str, within: float = 0.3) -> bool:
        """Whether a call from ``watcher`` arrived in the last ``within`` seconds."""
        return any(c.watcher == watcher and c.t > time.time() - within for c in self.calls()[-300:])

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc, timeout=10)


# -- watchers ------------------------------------------------------------------------


@dataclass
class WatcherProcess:
    """One ``feedwatch watch`` process (``proc`` may be a wrapper such as ``faketime``)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    killed: bool = False
    _pid: int | None = None

    @property
    def pid(self) -> int:
        """The PID of the watcher itself: ``faketime`` forks it as a child of its own."""
        if self._pid is None:
            self._pid = wait_for(self._find_pid, timeout=30, message=f"the PID of {self.name}", interval=0.02)
        return self._pid

    def _find_pid(self) -> int | None:
        pid = self.proc.pid
        for _ in range(3):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                return None
            if Path(exe).resolve() == Path(sys.executable).resolve():
                return pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if not children:
                return None
            pid = int(children[0])
        return None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.alive(), f"{self.name} (pid {self.pid}) is not running: {self.tail()}"
        if sig == signal.SIGKILL:
            self.killed = True
        os.kill(self.pid, sig)

    def entries(self) -> list[dict[str, Any]]:
        out = []
        if self.log.exists():
            for line in self.log.read_text(errors="replace").splitlines():
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
        return out

    def actions(self, action: str) -> list[dict[str, Any]]:
        return [e for e in self.entries() if e.get("action") == action]

    def owner(self, timeout: float = 60) -> str:
        started = wait_for(
            lambda: self.actions("watcher_started") or not self.alive(),
            timeout=timeout,
            message=f"{self.name} to log watcher_started",
        )
        assert self.alive() or isinstance(started, list), self.tail()
        return str(started[0]["owner"])

    def errors(self) -> list[str]:
        """Log lines that say something went wrong: error level, tracebacks, crashes."""
        bad = []
        for line in self.log.read_text(errors="replace").splitlines() if self.log.exists() else []:
            if line.startswith("{"):
                try:
                    entry = json.loads(line)
                except ValueError:
                    bad.append(line)
                    continue
                if entry.get("level") in ("error", "critical") or entry.get("exception"):
                    bad.append(line)
            elif line.strip():
                bad.append(line)
        return bad

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Fleet:
    """Watcher processes of one feed, each with a log file and an ``X-Watcher`` header."""

    def __init__(
        self, workdir: Path, db: str, feed: str, handler: str, args: Sequence[str] = WATCHER_ARGS
    ) -> None:
        self.workdir = workdir
        self.db = db
        self.feed = feed
        self.handler = handler
        self.args = list(args)
        self.watchers: list[WatcherProcess] = []

    def start(
        self, count: int = 1, *, env: dict[str, str] | None = None, prefix: Sequence[str] = (),
        args: Sequence[str] = (),
    ) -> list[WatcherProcess]:  # fmt: skip
        started = []
        for _ in range(count):
            name = f"w{len(self.watchers) + 1}"
            log = self.workdir / f"{name}.log"
            # The shell execs the watcher (or its wrapper) with its output in the log.
            redirect = ["sh", "-c", 'log=$1; shift; exec "$@" >>"$log" 2>&1', "sh", str(log)]
            proc = start_watcher(
                self.db, self.feed, handler=self.handler, args=[*self.args, *args],
                env={"FEEDWATCH_HANDLER_HEADERS": f"X-Watcher: {name}", **(env or {})},
                prefix=[*redirect, *prefix],
            )  # fmt: skip
            watcher = WatcherProcess(name, proc, log)
            self.watchers.append(watcher)
            started.append(watcher)
        for w in started:
            w.owner()
            assert w.pid
        return started

    def alive(self) -> list[WatcherProcess]:
        return [w for w in self.watchers if w.alive()]

    def stop_all(self, timeout: float = 30) -> dict[str, int]:
        """SIGTERM every live watcher (SIGCONT first, in case one is stopped); return exit codes."""
        for w in self.watchers:
            if w.alive():
                pid = w._pid or w.proc.pid  # never wait for a PID at cleanup
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGTERM)
        codes: dict[str, int] = {}
        for w in self.watchers:
            try:
                codes[w.name] = w.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(w._pid or w.proc.pid, signal.SIGKILL)
                codes[w.name] = stop(w.proc, signal.SIGKILL, timeout=10)
        return codes

    def stop_and_check(self, timeout: float = 30) -> None:
        """Stop every watcher; each one not killed by the test exits 0 with no error logged."""
        codes = self.stop_all(timeout)
        problems = []
        for w in self.watchers:
            if w.killed:
                continue
            if codes[w.name] != 0:
                problems.append(f"{w.name} exited {codes[w.name]}:\n{w.tail()}")
            problems += [f"{w.name} logged: {line[:500]}" for line in w.errors()]
        assert not problems, "\n".join(problems[:20])


# -- the feed, as seen from the database ------------------------------------------------


def count_items(store: Store, feed: str, status: str = "complete") -> int:
    t = store.tables
    query = (
        select(func.count())
        .select_from(t.items.join(t.partitions, t.items.c.partition_pk == t.partitions.c.pk))
        .where(t.partitions.c.feed == feed, t.items.c.status == status)
    )
    return int(read(store, lambda conn: conn.execute(query).scalar()) or 0)


def open_partitions(store: Store, feed: str) -> int:
    t = store.tables
    query = select(func.count()).where(t.partitions.c.feed == feed, t.partitions.c.status == "available")
    return int(read(store, lambda conn: conn.execute(query).scalar()) or 0)


def owners(store: Store, feed: str) -> dict[str, str | None]:
    """Partition id -> owner, for open partitions."""
    t = store.tables
    query = select(t.partitions.c.id, t.partitions.c.owner).where(
        t.partitions.c.feed == feed, t.partitions.c.status == "available"
    )
    return read(store, lambda conn: {r[0]: r[1] for r in conn.execute(query)})


def held_by(store: Store, feed: str, watcher: WatcherProcess) -> list[str]:
    """Open partitions whose owner is ``watcher`` (owner ids carry the PID)."""
    return [p for p, o in owners(store, feed).items() if o and f"-{watcher.pid}-" in o]


def busy_watcher(
    store: Store,
    feed: str,
    fleet: Fleet,
    handler: HandlerProcess,
    *,
    calling: bool = True,
    rng: random.Random | None = None,
    timeout: float = 30,
) -> WatcherProcess:
    """A live watcher that holds partitions (and, if ``calling``, has calls in flight)."""

    def find() -> WatcherProcess | None:
        assert open_partitions(store, feed) > 0, "the work drained before the fault: enqueue more"
        alive = fleet.alive()
        for w in (rng or random.Random()).sample(alive, len(alive)):
            if held_by(store, feed, w) and (not calling or handler.calling(w.name)):
                return w
        return None

    found: WatcherProcess = wait_for(
        find, timeout=timeout, message="a watcher with leases and calls in flight", interval=0.05
    )
    return found


def wait_taken_over(
    store: Store, feed: str, watcher: WatcherProcess, held: list[str], timeout: float = 60
) -> None:
    """Wait until none of the partitions ``held`` is owned by ``watcher`` any more."""
    wait_for(
        lambda: not set(held) & set(held_by(store, feed, watcher)),
        timeout=timeout,
        message=f"the partitions {held} of {watcher.name} to be taken over",
    )


def wait_drained(store: Store, feed: str, timeout: float) -> float:
    """Wait until no partition of ``feed`` is open; return the seconds it took."""
    start = time.monotonic()
    wait_for(
        lambda: open_partitions(store, feed) == 0,
        timeout=timeout,
        message=lambda: (
            f"feed {feed} to drain ({open_partitions(store, feed)} partitions still open, "
            f"{count_items(store, feed, 'available')} items available)"
        ),
        interval=0.2,
    )
    return time.monotonic() - start


def wait_progress(
    store: Store, feed: str, since: float, timeout: float, baseline: int | None = None
) -> float:
    """Wait for a new committed completion; return seconds from ``since`` (a monotonic time)."""
    base = count_items(store, feed) if baseline is None else baseline
    wait_for(
        lambda: count_items(store, feed) > base,
        timeout=timeout,
        message="a new completion to be committed",
        interval=0.05,
    )
    return time.monotonic() - since


# -- database servers of the suite's own -------------------------------------------------


class _ServerProcess:
    """A database server from a temporary data directory, started and stopped by its PID.

    A subclass says how to launch it (:meth:`_launch`), when it is ready (:meth:`_ready`),
    and which signal stops it cleanly and which one ends it when that takes too long.
    """

    APP_USER = "fwapp"
    name: str
    stop_signal: int
    kill_signal: int

    def __init__(self, prefix: str, preferred_port: int, log_name: str) -> None:
        self.base = Path(tempfile.mkdtemp(prefix=prefix))
        self.datadir = self.base / "data"
        self.log = self.base / log_name
        self.port = free_port(preferred_port)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120) -> float:
        """Start the server; return the seconds until it accepted connections."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        began = time.monotonic()
        with open(self.log, "ab") as out:
            self.proc = self._launch(out)
        wait_for(
            self._ready,
            timeout=timeout,
            message=f"{self.name} to accept connections (see {self.log})",
            interval=0.2,
        )
        return time.monotonic() - began

    def _launch(self, out: IO[bytes]) -> subprocess.Popen[bytes]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _check_alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited: {self.log.read_text()[-3000:]}")

    def stop(self, sig: int | None = None, timeout: float = 120) -> None:
        """Send ``sig`` (the class's clean stop by default); its kill signal after ``timeout`` s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, self.stop_signal if sig is None else sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, self.kill_signal)
            self.proc.wait(30)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


class MariaDBServer(_ServerProcess):
    """``mariadbd`` from a temporary data directory, started and stopped by PID.

    The watchers connect as ``fwapp``, a user with rights on the ``feedwatch``
    database only (no SUPER, no READ ONLY ADMIN), so ``read_only`` applies to
    them; the suite administers the server as root over its socket.
    """

    name = "mariadbd"
    stop_signal = signal.SIGTERM
    kill_signal = signal.SIGKILL

    def __init__(self, preferred_port: int = 23306) -> None:
        super().__init__("fwfaults-mariadb-", preferred_port, "error.log")
        self.socket = self.base / "mysqld.sock"

    @property
    def app_url(self) -> str:
        return f"mysql+pymysql://{self.APP_USER}:{self.APP_USER}@127.0.0.1:{self.port}/feedwatch"

    def install(self) -> MariaDBServer:
        result = subprocess.run(
            ["mariadb-install-db", f"--datadir={self.datadir}", "--user=root",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            capture_output=True, timeout=180, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"mariadb-install-db failed: {result.stderr.decode()[-2000:]}"
        self.start()
        self.sql(
            "CREATE DATABASE IF NOT EXISTS feedwatch",
            f"CREATE USER IF NOT EXISTS '{self.APP_USER}'@'127.0.0.1' IDENTIFIED BY '{self.APP_USER}'",
            f"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, ALTER, INDEX, REFERENCES "
            f"ON feedwatch.* TO '{self.APP_USER}'@'127.0.0.1'",
            # PROCESS only lets the suite see which transactions hold locks.
            f"GRANT PROCESS ON *.* TO '{self.APP_USER}'@'127.0.0.1'",
        )
        return self

    def _launch(self, out: IO[bytes]) -> subprocess.Popen[bytes]:
        self.socket.unlink(missing_ok=True)  # left behind by a killed server
        return subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.datadir}", "--user=root",
             f"--port={self.port}", "--bind-address=127.0.0.1", f"--socket={self.socket}",
             f"--pid-file={self.base / 'mysqld.pid'}", "--skip-name-resolve",
             "--max-connections=400", "--innodb-buffer-pool-size=128M",
             "--innodb-flush-log-at-trx-commit=2", "--innodb-lock-wait-timeout=15",
             "--skip-log-bin", f"--log-error={self.log}"],
            stdout=out, stderr=out,
        )  # fmt: skip

    def _ready(self) -> bool:
        """Whether the server accepts connections (TCP first: PyMySQL leaks a refused UNIX socket)."""
        self._check_alive()
        try:
            pymysql.connect(
                host="127.0.0.1", port=self.port, user=self.APP_USER, password=self.APP_USER,
                connect_timeout=2,
            ).close()  # fmt: skip
        except pymysql.err.OperationalError as error:
            if error.args[0] != 1045:  # 1045: up, but the user is not created yet (install)
                return False
        self.sql("SELECT 1")
        return True

    def shutdown(self, *, crash: bool) -> None:
        """A clean shutdown (SIGTERM), or a crash (SIGKILL: InnoDB recovers at the next start)."""
        self.stop(signal.SIGKILL if crash else signal.SIGTERM)

    def set_read_only(self, on: bool) -> None:
        """``read_only``: writes of users without READ ONLY ADMIN fail at once (error 1290)."""
        self.sql(f"SET GLOBAL read_only = {int(on)}")

    def deadlocks(self) -> int:
        """Deadlocks the server detected since it started (the whole server is the suite's)."""
        return int(self.sql("SHOW GLOBAL STATUS LIKE 'Innodb_deadlocks'")[0][1])

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        conn = pymysql.connect(unix_socket=str(self.socket), user="root", connect_timeout=5)
        try:
            rows: list[tuple[Any, ...]] = []
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                    rows = list(cursor.fetchall())
            conn.commit()
            return rows
        finally:
            conn.close()


class PostgresServer(_ServerProcess):
    """``postgres`` from a temporary data directory (``initdb``), started and stopped by PID.

    It runs as the ``postgres`` system user (PostgreSQL refuses root). The
    watchers connect as ``fwapp``, an ordinary role owning the ``feedwatch``
    database; the suite administers the server as ``postgres`` over its
    socket. Durability is off (``fsync``): a crash here is the server's, not
    the disk's.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # fast shutdown
    kill_signal = signal.SIGQUIT  # immediate shutdown (crash recovery at the next start)

    def __init__(self, preferred_port: int = 25432) -> None:
        super().__init__("fwfaults-postgres-", preferred_port, "server.log")
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))[-1]).parent

    @property
    def app_url(self) -> str:
        return f"postgresql+psycopg://{self.APP_USER}:{self.APP_USER}@127.0.0.1:{self.port}/feedwatch"

    def install(self) -> PostgresServer:
        shutil.chown(self.base, "postgres", "postgres")
        result = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust",
             "--no-sync"],
            capture_output=True, timeout=180, check=False, user="postgres",
        )  # fmt: skip
        assert result.returncode == 0, f"initdb failed: {result.stderr.decode()[-2000:]}"
        self.start()
        self.sql(f"CREATE ROLE {self.APP_USER} LOGIN PASSWORD '{self.APP_USER}'")
        self.sql(f"CREATE DATABASE feedwatch OWNER {self.APP_USER}")
        return self

    def _launch(self, out: IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [str(self.bin / "postgres"), "-D", str(self.datadir), "-p", str(self.port),
             "-k", str(self.base), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "shared_buffers=64MB"],
            stdout=out, stderr=out, user="postgres",
        )  # fmt: skip

    def _ready(self) -> bool:
        self._check_alive()
        try:
            self.sql("SELECT 1")
        except psycopg.OperationalError:
            return False
        return True

    def shutdown(self, *, crash: bool) -> None:
        """A fast shutdown, or an immediate one: PostgreSQL's crash (SIGKILL of the postmaster
        would leave its backends holding the shared memory, and no new server could start)."""
        self.stop(signal.SIGQUIT if crash else signal.SIGINT)

    def set_read_only(self, on: bool) -> None:
        """``default_transaction_read_only`` for every session, at its next statement (a reload)."""
        self.sql(
            f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}",
            "SELECT pg_reload_conf()",
        )

    def deadlocks(self) -> int:
        return int(self.sql("SELECT deadlocks FROM pg_stat_database WHERE datname = 'feedwatch'")[0][0])

    def sql(self, *statements: str) -> list[tuple[Any, ...]]:
        with psycopg.connect(
            host=str(self.base), port=self.port, user="postgres", dbname="postgres",
            autocommit=True, connect_timeout=5,
        ) as conn:  # fmt: skip
            rows: list[tuple[Any, ...]] = []
            for statement in statements:
                cursor = conn.execute(statement)  # the suite's own SQL
                rows = list(cursor.fetchall()) if cursor.description else []
            return rows


#: A database server of the suite's own: MariaDB or PostgreSQL.
OwnServer = MariaDBServer | PostgresServer


# -- the recovery table ---------------------------------------------------------------


@dataclass
class Measure:
    fault: str
    measure: str
    seconds: float
    note: str = ""


class RecoveryLog:
    """Measured recovery times; printed by each test and summed up at the end of the run."""

    def __init__(self) -> None:
        self.rows: list[Measure] = []

    def record(self, fault: str, measure: str, seconds: float, note: str = "") -> None:
        row = Measure(fault, measure, seconds, note)
        self.rows.append(row)
        print(f"[recovery] {fault}: {measure} = {seconds:.2f} s {note}".rstrip())

    def table(self) -> str:
        lines = ["| fault | measured | seconds | note |", "|---|---|---|---|"]
        lines += [f"| {r.fault} | {r.measure} | {r.seconds:.2f} | {r.note} |" for r in self.rows]
        return "\n".join(lines)


# -- one scenario ------------------------------------------------------------------------


class Scenario:
    """One fault run: its feed, handler, watcher fleets and proxies, all cleaned up at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stores: dict[str, Store] = {}
        self.handlers: list[HandlerProcess] = []
        self.fleets: list[Fleet] = []
        self.proxies: list[TCPProxy] = []

    def store(self, url: str) -> Store:
        if url not in self.stores:
            self.stores[url] = Store.open(url, pool_size=4)
        return self.stores[url]

    def feed(self, url: str, **settings: Any) -> Feed:
        defaults: dict[str, Any] = {"backoff_base": 0.05, "backoff_cap": 0.5, "max_unanswered": 10}
        return Feed.create(self.store(url), f"f{uuid.uuid4().hex[:12]}", **{**defaults, **settings})

    def handler(self, **config: Any) -> HandlerProcess:
        handler = HandlerProcess(self.workdir, config).start()
        self.handlers.append(handler)
        return handler

    def fleet(
        self, db: str, feed: Feed, handler: HandlerProcess, args: tuple[str, ...] = WATCHER_ARGS
    ) -> Fleet:
        fleet = Fleet(self.workdir, db, feed.name, handler.url, args)
        self.fleets.append(fleet)
        return fleet

    def proxy(self, url: str) -> tuple[TCPProxy, str]:
        """A proxy in front of the database at ``url``, and the URL that goes through it."""
        parsed = make_url(url)
        protocol = "postgresql" if parsed.get_backend_name() == "postgresql" else "mysql"
        proxy = TCPProxy(parsed.host or "127.0.0.1", parsed.port or 3306, protocol).start()
        self.proxies.append(proxy)
        return proxy, parsed.set(port=proxy.port).render_as_string(hide_password=False)

    def close(self) -> None:
        for fleet in self.fleets:
            with contextlib.suppress(Exception):
                fleet.stop_all(timeout=20)
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.stop()
        for handler in self.handlers:
            with contextlib.suppress(Exception):
                handler.stop()
        for store in self.stores.values():
            store.close()


def enqueue_workload(
    feed: Feed,
    expected: Expected,
    *,
    partitions: int,
    items: int,
    last_gate: int,
) -> None:
    """``partitions`` x ``items`` items, each walking gates 0..``last_gate``."""
    for p in range(partitions):
        part = f"p{p}"
        feed.enqueue(part, {f"i{i:03d}": expected.add(part, f"i{i:03d}", last_gate) for i in range(items)})


# -- what a process holds in the database ----------------------------------------------


def client_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process ``pid`` has open."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir() if fd_dir.exists() else []:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def locking_transactions(store: Store, pid: int, *, blocking: bool = False) -> int:
    """Open transactions of process ``pid`` that hold row locks (that block others, if asked)."""
    ports = client_ports(pid)
    if store.dialect == "postgresql":
        # A transaction that wrote or locked a row has an xid.
        held = (
            "pid IN (SELECT unnest(pg_blocking_pids(pid)) FROM pg_stat_activity)"
            if blocking
            else "backend_xid IS NOT NULL"
        )
        query = f"SELECT client_port FROM pg_stat_activity WHERE datname = current_database() AND {held}"
        clients = read(store, lambda c: list(c.execute(text(query)).scalars()))
        return sum(1 for port in clients if port in ports)
    query = (
        "SELECT p.HOST FROM information_schema.innodb_trx t "
        "JOIN information_schema.processlist p ON p.ID = t.trx_mysql_thread_id "
        + (
            "WHERE t.trx_id IN (SELECT blocking_trx_id FROM information_schema.innodb_lock_waits)"
            if blocking
            else "WHERE t.trx_lock_structs > 0"
        )
    )
    hosts = [h for h in read(store, lambda c: list(c.execute(text(query)).scalars())) if h and ":" in h]
    return sum(1 for h in hosts if int(h.rsplit(":", 1)[1]) in ports)
