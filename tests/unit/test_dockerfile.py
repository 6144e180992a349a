"""The Dockerfile is linted and its steps exercised (no Docker engine here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_the_dockerfile_passes_hadolint() -> None:
    result = subprocess.run(
        ["hadolint", str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_dockerfile_steps_install_a_working_feedwatch_entry_point(tmp_path: Path) -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copies = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]
    assert copies == [["pyproject.toml", "README.md"], ["operator"]]
    assert 'ENTRYPOINT ["feedwatch"]' in lines
    context = tmp_path / "src"  # only what the COPY steps copy
    context.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, context / name)
    shutil.copytree(
        ROOT / "operator", context / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    # The RUN step, without re-downloading dependencies the machine already has.
    subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", "."], cwd=context, check=True)
    out = subprocess.run(
        [venv / "bin" / "feedwatch", "watch", "--help"], capture_output=True, text=True, check=True
    )
    assert "--handler" in out.stdout
    installed = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import feedwatch.store.migrations, pathlib, feedwatch;"
            "print(pathlib.Path(feedwatch.store.migrations.__file__).parent)",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert (Path(installed) / "versions" / "0001_initial.py").exists()
    assert (Path(installed) / "script.py.mako").exists(), "package data installed"
