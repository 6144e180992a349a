"""``feedwatch demo``: run as a process, checked through its output and its database."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedwatch import Store
from tests.demo.support import (
    EXAMPLES,
    DemoRun,
    assert_failed_and_recovered,
    assert_fan_in_after_fan_out,
    clean_env,
    posting_facts,
    run_demo,
)
from tests.support.processes import stop

pytestmark = [pytest.mark.demo, pytest.mark.slow]

POSTINGS = ("backend-engineer", "data-engineer", "frontend-engineer", "site-reliability-engineer")


@pytest.fixture(scope="module")
def default_run() -> Iterator[DemoRun]:
    """``feedwatch demo`` with its defaults: 4 postings x 250 resumes, a temporary SQLite file."""
    started = time.monotonic()
    run = run_demo()
    print(f"feedwatch demo took {time.monotonic() - started:.1f} s (process start to exit)")
    yield run
    if run.workdir is not None and run.workdir.name.startswith("feedwatch-demo-"):
        shutil.rmtree(run.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def default_store(default_run: DemoRun) -> Iterator[Store]:
    store = Store.open(default_run.database)
    yield store
    store.close()


def test_the_demo_creates_a_temporary_sqlite_database_and_says_where(default_run: DemoRun) -> None:
    assert default_run.database.startswith("sqlite:////")
    assert default_run.workdir is not None
    assert Path(default_run.database.removeprefix("sqlite:///")).is_file()
    assert default_run.feed == "resumes"


def test_every_rank_step_ran_after_every_resume_of_its_posting(
    default_run: DemoRun, default_store: Store
) -> None:
    assert_fan_in_after_fan_out(default_store, default_run.feed, postings=4, resumes=250)


def test_the_failing_posting_is_reported_and_recovers_after_the_fix_and_a_retry(
    default_run: DemoRun, default_store: Store
) -> None:
    out = default_run
    assert out.lines(r"data-engineer: item resume-\d+ failed at gate 0: classifier v1 cannot read")
    assert out.lines(r"data-engineer: FAILED: item 'resume-\d+' failed at gate 0")
    assert out.lines(r"deploying the fix: classifier v2")
    (redrive,) = out.lines(r"re-driving data-engineer")
    assert "feedwatch retry --db sqlite:////" in redrive
    assert "--feed resumes data-engineer" in redrive
    assert "1 failed item(s) reset" in redrive
    assert out.lines(r"data-engineer: complete \(recovered after the fix and the re-drive\)")
    facts = posting_facts(default_store, default_run.feed)
    assert_failed_and_recovered(facts["data-engineer"])
    for other in set(POSTINGS) - {"data-engineer"}:
        assert "redriven" not in [e[0] for e in facts[other].events]


def test_the_demo_prints_the_top_ten_of_every_posting_and_the_totals(default_run: DemoRun) -> None:
    text = default_run.output
    for posting in POSTINGS:
        block = text.split(f"top 10 for {posting} ", 1)[1].split("\n\n", 1)[0]
        ranks = re.findall(r"^\s+(\d+)\s+\d+\s+(strong|maybe|no)\s", block, re.MULTILINE)
        assert [int(r[0]) for r in ranks] == list(range(1, 11)), block
        assert "250 resumes ranked" in block
    (totals,) = default_run.lines(r"^totals: ")
    match = re.search(r"totals: (\d+) items complete .* in ([\d.]+) s: (\d+) items/s", totals)
    assert match, totals
    assert int(match.group(1)) == 1004
    print(totals)


def test_the_printed_status_command_shows_the_same_database(default_run: DemoRun) -> None:
    cmd = default_run.status_command
    proc = subprocess.run(
        [sys.executable, "-m", *cmd], capture_output=True, text=True, timeout=60, env=clean_env(),
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for posting in POSTINGS:
        assert re.search(rf"resumes\s+{posting}\s+complete\s+1 ", proc.stdout), proc.stdout


def test_without_a_terminal_the_demo_prints_plain_progress_lines(default_run: DemoRun) -> None:
    progress = default_run.lines(r"^\[\s*[\d.]+s\] progress ")
    assert progress, default_run.output
    assert "\x1b[" not in default_run.output  # no terminal control sequences


def test_three_watcher_processes_share_the_postings_and_leases_move_between_them() -> None:
    run = run_demo("--watchers", "3", "--postings", "3", "--resumes", "60")
    pids = [int(p) for p in re.findall(r"\b(?:w\d) \(pid (\d+)", run.output)]
    pids += [int(p) for p in re.findall(r"^watcher w1: pid (\d+)", run.output, re.MULTILINE)]
    assert len(set(pids)) == 6, f"w1-w3 and, after the rolling update, w4-w6:\n{run.output}"
    assert run.lines(r"rolling update: starting w4, w5, w6 with classifier v2")
    assert run.lines(r"deployed: every watcher runs classifier v2")
    store = Store.open(run.database)
    try:
        facts = assert_fan_in_after_fan_out(store, run.feed, postings=3, resumes=60)
        owners = {e[2] for f in facts.values() for e in f.events if e[0] == "complete"}
        assert len(owners) >= 2, f"the work of one watcher process only: {owners}"
        moved = {e[2] for e in facts["data-engineer"].events if e[0].startswith("lease_")}
        assert len(moved) >= 2, "the re-driven posting moved to a watcher running classifier v2"
        assert_failed_and_recovered(facts["data-engineer"])
    finally:
        store.close()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), f"watcher pid {pid} still runs"
    if run.workdir is not None:
        shutil.rmtree(run.workdir, ignore_errors=True)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def test_the_demo_runs_on_the_database_given_with_db(db_url: str) -> None:
    run = run_demo("--db", db_url, "--postings", "2", "--resumes", "80")
    store = Store.open(db_url)
    try:
        facts = assert_fan_in_after_fan_out(store, run.feed, postings=2, resumes=80)
        assert_failed_and_recovered(facts["data-engineer"])
    finally:
        store.close()
    assert run.workdir is None, "a database given with --db is the user's: nothing to remove"


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``examples/resume_handler.py`` on a free port; yields (its URL, its database URL)."""
    db = f"sqlite:///{tmp_path / 'demo.db'}"
    log = tmp_path / "handler.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "resume_handler.py"), "--port", "0", "--db", db],
            stdout=out, stderr=subprocess.STDOUT, env=clean_env(),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (match := re.search(r"listening on (http://\S+)", log.read_text())):
            assert proc.poll() is None, f"the handler exited: {log.read_text()}"
            assert time.monotonic() < deadline, f"the handler did not start: {log.read_text()}"
            time.sleep(0.05)
        yield match.group(1), db
    finally:
        stop(proc, timeout=15)


def test_the_demo_runs_against_the_example_http_handler(handler: tuple[str, str]) -> None:
    url, db = handler
    run = run_demo("--handler", url, "--db", db, "--postings", "3", "--resumes", "80")
    assert run.lines(rf"handler {re.escape(url)}: deployed classifier v1")
    assert run.lines(rf"deployed: the handler at {re.escape(url)} now runs classifier v2")
    store = Store.open(db)
    try:
        facts = assert_fan_in_after_fan_out(store, run.feed, postings=3, resumes=80)
        assert_failed_and_recovered(facts["data-engineer"])
    finally:
        store.close()


def test_three_watcher_processes_work_against_the_http_handler(handler: tuple[str, str]) -> None:
    url, db = handler
    run = run_demo("--handler", url, "--db", db, "--watchers", "3", "--postings", "3", "--resumes", "40")
    assert run.lines(r"watcher w1: pid \d+, `python -m feedwatch watch --handler")
    assert not run.lines(r"rolling update"), "with a handler, the handler is redeployed instead"
    store = Store.open(db)
    try:
        facts = assert_fan_in_after_fan_out(store, run.feed, postings=3, resumes=40)
        assert_failed_and_recovered(facts["data-engineer"])
    finally:
        store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--watchers", "0"], "--watchers must be between 1 and 16, not 0"),
        (["--resumes", "0"], "--resumes must be between 1 and 5000, not 0"),
        (["--handler", "http://127.0.0.1:9/"], "--handler needs --db"),
    ],
)
def test_impossible_options_are_a_usage_error(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "feedwatch", "demo", *args], capture_output=True, text=True,
        timeout=60, env=clean_env(), check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stdout + proc.stderr


def test_on_a_terminal_the_demo_draws_a_live_table() -> None:
    import pty

    primary, secondary = pty.openpty()
    env = clean_env() | {"COLUMNS": "140", "LINES": "40", "TERM": "xterm-256color"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "feedwatch", "demo", "--postings", "2", "--resumes", "40"],
        stdin=subprocess.DEVNULL, stdout=secondary, stderr=secondary, env=env,
    )  # fmt: skip
    os.close(secondary)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(max(deadline - time.monotonic(), 1)) == 0
    finally:
        os.close(primary)
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "\x1b[" in text, "rich drew with terminal control sequences"
    assert "screening job applications" in text
    assert "gate 0: resumes classified" in text
    assert "top 10 for backend-engineer" in text
    workdir = re.search(r"rm -r (/\S+feedwatch-demo-\w+)", re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", text))
    if workdir:
        shutil.rmtree(workdir.group(1), ignore_errors=True)
