"""Which engine the benchmark runs: this checkout's ``operator/``, or a snapshot at a git revision.

``python -m bench`` re-executes itself with the chosen source root first on
``PYTHONPATH``, so the benchmark process and every watcher it starts import the
same feedwatch, whatever ``pip install -e`` points at (a CI copy elsewhere,
say). ``--engine-rev REV`` extracts ``operator/`` at ``REV`` with ``git
archive`` (kept in the temporary directory for reuse): before/after
comparisons, and runs that stay on one engine while the working tree changes.
This module imports nothing from feedwatch.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_VAR = "FEEDWATCH_BENCH_ENGINE_SOURCE"
LABEL_VAR = "FEEDWATCH_BENCH_ENGINE_LABEL"
PINNED_VAR = "FEEDWATCH_BENCH_PINNED"


def source() -> Path:
    return Path(os.environ.get(SOURCE_VAR) or ROOT / "operator")


def label() -> str:
    return os.environ.get(LABEL_VAR, "")


def snapshot(rev: str) -> tuple[Path, str]:
    """``operator/`` at git revision ``rev``, extracted once; returns its path and the short hash."""
    short = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    target = Path(tempfile.gettempdir()) / f"feedwatch-bench-engine-{short}"
    if not (target / "operator" / "feedwatch" / "__init__.py").exists():
        archive = subprocess.run(
            ["git", "archive", "--format=tar", short, "operator"], cwd=ROOT, capture_output=True, check=True
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
    return target / "operator", short


def pin(argv: list[str]) -> None:
    """Re-execute ``python -m bench argv`` with the engine's source root first on the path."""
    env = dict(os.environ)
    if "--engine-rev" in argv or any(a.startswith("--engine-rev=") for a in argv):
        rev = (
            next(
                (a.split("=", 1)[1] for a in argv if a.startswith("--engine-rev=")),
                None,
            )
            or argv[argv.index("--engine-rev") + 1]
        )
        path, short = snapshot(rev)
        env[SOURCE_VAR], env[LABEL_VAR] = str(path), short
    wanted = env.get(SOURCE_VAR) or str(ROOT / "operator")
    if os.environ.get(PINNED_VAR) == wanted:
        return
    env[PINNED_VAR] = wanted
    env["PYTHONPATH"] = os.pathsep.join(p for p in (wanted, str(ROOT), env.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench", *argv], env)  # noqa: S606 - ourselves
