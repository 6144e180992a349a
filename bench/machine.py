"""The machine the figures come from: CPU, memory, versions, load."""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from bench.harness import ROOT, Database


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_revision() -> str:
    from bench import engine

    if engine.label():
        return f"{engine.label()} (a snapshot of operator/ at that revision: --engine-rev)"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "operator"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return rev + (" (engine has uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def describe(databases: list[Database]) -> dict[str, Any]:
    mem = psutil.virtual_memory()
    info: dict[str, Any] = {
        "CPU": f"{cpu_model()}, {psutil.cpu_count(logical=True)} logical cores "
        f"({psutil.cpu_count(logical=False)} physical)",
        "memory": f"{mem.total / 2**30:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "feedwatch": f"{_version('feedwatch')}, git {git_revision()}",
        "drivers": ", ".join(f"{p} {_version(p)}" for p in ("SQLAlchemy", "PyMySQL", "psycopg", "aiohttp")),
    }
    for db in databases:
        try:
            info[db.label] = db.version() + _durability(db)
        except Exception as error:
            info[db.label] = f"unknown ({error})"
    info["load average at start"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return info


def _durability(db: Database) -> str:
    """The settings that decide what a COMMIT costs."""
    from sqlalchemy import text

    try:
        with db.store.engine.connect() as conn:
            if db.name == "mariadb":
                flush = conn.execute(text("SELECT @@innodb_flush_log_at_trx_commit")).scalar()
                pool = conn.execute(text("SELECT @@innodb_buffer_pool_size")).scalar()
                return f" (innodb_flush_log_at_trx_commit={flush}, buffer pool {int(pool or 0) // 2**20} MiB)"
            if db.name == "postgresql":
                fsync = conn.execute(text("SHOW fsync")).scalar()
                sync = conn.execute(text("SHOW synchronous_commit")).scalar()
                return f" (fsync={fsync}, synchronous_commit={sync})"
            return " (WAL, synchronous=NORMAL, file on the local disk)"
    except Exception:
        return ""
