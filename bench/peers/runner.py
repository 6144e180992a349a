"""Run one peer on one database, in a subprocess with a timeout, and measure it.

``run()`` gives the peer a fresh database on the same server feedwatch's
bench uses (``feedwatch_peer_<peer>``, dropped afterwards) or a fresh SQLite
file next to feedwatch's, starts ``python -m bench.peers.runner`` (the peer's
driver: it enqueues, starts the peer's workers and waits for every task's
line in the log) in its own session, and kills that whole session when the
timeout passes, so a stuck peer cannot hang the bench. The figures come from
the log (``bench.peers.workload``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from bench.peers.workload import FANIN, ITEM, LOG_ENV, Context

#: The peers, in report order. Each module has DATABASES, FANIN, SETTINGS and drive(ctx).
PEERS = ("huey", "celery", "dbos", "chancy", "pgqueuer", "procrastinate")


def peer_module(name: str) -> ModuleType:
    return importlib.import_module(f"bench.peers.{name}_peer")


@dataclass
class Outcome:
    """What one peer run measured, or why it failed."""

    peer: str
    database: str
    fanin: bool  # fan-out/fan-in; False: independent jobs
    settings: str
    tasks: int = 0  # processor calls logged
    wall: float = 0.0  # first call's start to last call's end
    latencies: list[float] = field(default_factory=list)  # per partition: last item end -> fan-in start
    error: str | None = None

    @property
    def rate(self) -> float:
        return self.tasks / self.wall if self.wall > 0 else float("nan")

    @property
    def fanin_median(self) -> float:
        return statistics.median(self.latencies) if self.latencies else float("nan")


def measure(lines: list[str], outcome: Outcome) -> Outcome:
    """Fill ``outcome`` from the log lines: tasks, wall, fan-in latency per partition."""
    last_item: dict[int, float] = {}
    fanin_start: dict[int, float] = {}
    first, last = float("inf"), float("-inf")
    tasks = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, partition, start, end = parts[0], int(parts[1]), float(parts[2]), float(parts[3])
        tasks += 1
        first, last = min(first, start), max(last, end)
        if kind == ITEM:
            last_item[partition] = max(last_item.get(partition, end), end)
        elif kind == FANIN:
            fanin_start[partition] = min(fanin_start.get(partition, start), start)
    outcome.tasks = tasks
    outcome.wall = last - first if tasks else 0.0
    outcome.latencies = [fanin_start[p] - last_item[p] for p in fanin_start if p in last_item]
    return outcome


# -- databases -------------------------------------------------------------------


def _server_url(url: str, database: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(database=database).render_as_string(hide_password=False)


def _admin(url: str, statement: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def fresh_database(peer: str, database: str, url: str, work: Path) -> str:
    """A fresh, empty database for one peer run: its URL."""
    if database == "sqlite":
        path = work / f"peer-{peer}.db"
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{path}"
    name = f"feedwatch_peer_{peer}"
    _admin(url, f"DROP DATABASE IF EXISTS {name}")
    _admin(url, f"CREATE DATABASE {name}")
    return _server_url(url, name)


def drop_database(peer: str, database: str, url: str) -> None:
    if database == "sqlite":
        return
    name = f"feedwatch_peer_{peer}"
    force = " WITH (FORCE)" if database == "postgresql" else ""
    _admin(url, f"DROP DATABASE IF EXISTS {name}{force}")


# -- one run ---------------------------------------------------------------------


def run(
    peer: str,
    database: str,
    url: str,
    work: Path,
    *,
    partitions: int,
    items: int,
    timeout: float,
    env: dict[str, str] | None = None,
) -> Outcome:
    """One run of ``peer`` on ``database`` (whose bench URL is ``url``); never raises."""
    module = peer_module(peer)
    outcome = Outcome(peer, database, bool(module.FANIN), module.describe(database))
    log = work / f"peer-{peer}-{database}.log"
    log.unlink(missing_ok=True)
    try:
        peer_url = fresh_database(peer, database, url, work)
    except Exception as error:
        outcome.error = f"no database: {type(error).__name__}: {error}"
        return outcome
    out = work / f"peer-{peer}-{database}.out"
    cmd = [sys.executable, "-m", "bench.peers.runner", "--peer", peer, "--database", database,
           "--url", peer_url, "--partitions", str(partitions), "--items", str(items),
           "--work", str(work), "--log", str(log)]  # fmt: skip
    if env is None:
        from bench.harness import watcher_env

        env = watcher_env()
    started = time.monotonic()
    try:
        with open(out, "wb") as output:
            proc = subprocess.Popen(
                cmd, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                outcome.error = f"timed out after {timeout:.0f} s"
            finally:
                _kill_session(proc)  # the driver's workers too, also when the bench is interrupted
        lines = log.read_text().splitlines() if log.exists() else []
        measure(lines, outcome)
        if outcome.error is None and proc.returncode != 0:
            tail = out.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            outcome.error = f"exit {proc.returncode}: {tail[0][:300]}"
        expected = partitions * items + (partitions if outcome.fanin else 0)
        if outcome.error is None and outcome.tasks != expected:
            outcome.error = f"{outcome.tasks} of {expected} tasks logged"
        if outcome.error is not None:
            outcome.error += (
                f" ({outcome.tasks} tasks done in {time.monotonic() - started:.0f} s; "
                f"its output: {out.name}, kept with --keep-workdir)"
            )
    finally:
        try:
            drop_database(peer, database, url)
        except Exception as error:
            print(f"  warning: could not drop the {peer} database: {error}", flush=True)
    return outcome


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


# -- the driver (the subprocess) ---------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.peers.runner")
    p.add_argument("--peer", required=True, choices=PEERS)
    p.add_argument("--database", required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--log", type=Path, required=True)
    args = p.parse_args(argv)
    os.environ[LOG_ENV] = str(args.log)
    module = peer_module(args.peer)
    ctx = Context(args.peer, args.database, args.url, args.partitions, args.items, bool(module.FANIN),
                  args.work, args.log)  # fmt: skip
    try:
        module.drive(ctx)
    finally:
        ctx.stop_workers()
    return 0


if __name__ == "__main__":
    sys.exit(main())
