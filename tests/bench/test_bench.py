"""The benchmark harness runs end to end at a tiny size, so it cannot rot.

No timing assertions: performance is measured by ``make bench``, which prints
figures; this only checks that every scenario runs, on real databases and real
watcher processes, and that the table, the report, the plot and the JSON are
written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ALL_DATABASES, MARIADB_URL, POSTGRES_URL

pytestmark = [pytest.mark.bench, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def run_bench(results: Path, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "operator"), env.get("PYTHONPATH", "")])
    env["FEEDWATCH_BENCH_MARIADB_URL"] = MARIADB_URL
    env["FEEDWATCH_BENCH_POSTGRES_URL"] = POSTGRES_URL
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--size", "tiny", "--results", str(results), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc.stdout


def read_results(results: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / "results.json").read_text())
    assert data["errors"] == []
    return data


@pytest.mark.parametrize("database", [d for d in ALL_DATABASES if d == "sqlite"])
def test_every_scenario_runs_and_writes_table_report_and_plot(database: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    stdout = run_bench(results, "--databases", database, "--no-defaults", "--history", "on", "--profile")
    data = read_results(results)
    figures = {(f["scenario"], f["metric"]) for f in data["figures"]}
    for expected in [
        ("1", "item-gates/s"),
        ("1", "enqueue rate"),
        ("1", "fan-in latency median"),
        ("1", "fan-in latency p99"),
        ("2", "feedwatch / bare client"),
        ("3", "multi-row UPDATE, 500 rows"),
        ("3", "indexed SELECT"),
        ("4", "SIGKILL: all its partitions resumed"),
        ("4", "SIGTERM: all its partitions resumed"),
        ("5", "lease cycle"),
        ("5", "peak RSS per watcher"),
    ]:
        assert expected in figures, f"no figure {expected}"
    assert "item-gates/s" in stdout  # the table is printed
    assert "target" in stdout
    report = (results / "report.md").read_text()
    for section in ("## Machine", "## Settings", "## Figures", "## CPU per process", "## Profiles"):
        assert section in report
    assert (results / "benchmarks.png").read_bytes().startswith(b"\x89PNG")
    assert (results / "profiles" / f"{database}-sql-counts.json").exists()


# The bench knows single servers; it runs on a Galera cluster with the cluster's URL in
# FEEDWATCH_BENCH_MARIADB_URL (docs/galera.md), so the smoke test covers the two servers.
@pytest.mark.parametrize("database", [d for d in ALL_DATABASES if d in ("mariadb", "postgresql")])
def test_scenarios_1_and_3_run_on_the_server_databases(database: str, tmp_path: Path) -> None:
    results = tmp_path / "results"
    run_bench(results, "--databases", database, "--scenarios", "1,3", "--no-defaults", "--history", "off")
    data = read_results(results)
    assert {f["scenario"] for f in data["figures"]} == {"1", "3"}
    assert any(f["metric"] == "item-gates/s" and f["median"] > 0 for f in data["figures"])
