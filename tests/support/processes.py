"""Watcher processes for tests: `feedwatch watch` as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def watcher_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "operator"), env.get("PYTHONPATH", "")])
    env.setdefault("FEEDWATCH_LOG_LEVEL", "INFO")
    env["FEEDWATCH_HEALTH_PORT"] = env.get("FEEDWATCH_HEALTH_PORT", "0")
    env.update(extra or {})
    return env


def start_watcher(
    db: str,
    feed: str,
    *,
    processor: str | None = None,
    handler: str | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: Path | None = None,
    prefix: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start ``feedwatch watch`` (short leases unless ``args`` say otherwise)."""
    cmd = [*prefix, sys.executable, "-m", "feedwatch", "watch", "--db", db, "--feed", feed]
    cmd += ["--processor", processor] if processor else ["--handler", handler or ""]
    cmd += ["--lease-duration", "2", "--poll-interval", "0.2", "--grace-period", "5", *args]
    if log is None:
        return subprocess.Popen(
            cmd, env=watcher_env(env), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=watcher_env(env), stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send ``sig`` (if it still runs), SIGKILL it after ``timeout`` seconds; its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


@contextmanager
def watchers(count: int, db: str, feed: str, **kwargs: object) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [start_watcher(db, feed, **kwargs) for _ in range(count)]  # type: ignore[arg-type]
    try:
        yield procs
    finally:
        for p in procs:
            stop(p)
