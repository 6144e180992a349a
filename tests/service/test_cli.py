"""Every `feedwatch` command, end to end, as a subprocess (`python -m feedwatch ...`)."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from feedwatch.cli import build_parser
from feedwatch.testing import assert_invariants, wait_for
from tests.service.helpers import (
    cli,
    cli_parallel,
    fresh_sqlite,
    log_text,
    ok,
    start_watch,
    stop_all,
    store_for,
)
from tests.support.handler import Handler
from tests.support.processes import watcher_env

pytestmark = pytest.mark.service


def _commands(parser: argparse.ArgumentParser, path: list[str]) -> list[list[str]]:
    """Every command and sub-command of the parser, as argument lists."""
    found = [path]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, [*path, name])
    return found


HELP = _commands(build_parser(), [])


def _parallel(commands: list[list[str]], env: dict[str, str]) -> list[tuple[int, str, str]]:
    return [(r.returncode, r.stdout, r.stderr) for r in cli_parallel(commands, env)]


@pytest.mark.slow
def test_every_command_help_exits_0() -> None:
    assert {" ".join(c) for c in HELP} >= {
        "watch",
        "enqueue",
        "status",
        "items",
        "retry",
        "gate",
        "cancel",
        "delete",
        "feed create",
        "feed update",
        "feed show",
        "feed list",
        "migrate",
        "purge",
    }
    results = _parallel([[*args, "--help"] for args in HELP], watcher_env())
    for args, (code, out, err) in zip(HELP, results, strict=True):
        assert code == 0, (args, err)
        assert out.startswith(f"usage: feedwatch {' '.join(args)}".rstrip()), (args, out[:200])
        assert err == ""


@pytest.mark.slow
def test_usage_errors_print_one_line_on_stderr_and_exit_2(tmp_path: Path) -> None:
    db = fresh_sqlite(tmp_path)
    ok(cli("feed", "create", "--db", db, "jobs"))
    handler = ["--handler", "http://127.0.0.1:9/"]
    cases = {
        "unknown option": ["status", "--db", db, "--bogus"],
        "unknown command": ["frobnicate"],
        "unknown choice": ["status", "--db", db, "--output", "yaml"],
        "bad URL scheme": ["status", "--db", "oracle://scott:tiger@db/x"],
        "bad URL scheme (watch)": ["watch", "--db", "foo://u:p@h/x", "--feed", "jobs", *handler],
        "bad handler scheme": ["watch", "--db", db, "--feed", "jobs", "--handler", "ftp://h/x"],
        "missing feed (status)": ["status", "--db", db, "--feed", "nope"],
        "missing feed (enqueue)": ["enqueue", "--db", db, "--feed", "nope", "p", "{}"],
        "missing feed (watch)": ["watch", "--db", db, "--feed", "nope", *handler],
        "missing feed (feed show)": ["feed", "show", "--db", db, "nope"],
        "missing --db (status)": ["status"],
        "missing --db (watch)": ["watch", "--feed", "jobs", *handler],
        "missing --db (migrate)": ["migrate"],
        "missing --feed": ["enqueue", "--db", db, "p", "{}"],
        "missing partition": ["items", "--db", db, "--feed", "jobs", "nope"],
        "item not JSON": ["enqueue", "--db", db, "--feed", "jobs", "p", "{not json"],
        "retry without a target": ["retry", "--db", db, "--feed", "jobs"],
        "no handler nor processor": ["watch", "--db", db, "--feed", "jobs"],
        "bad setting": ["watch", "--db", db, "--feed", "jobs", *handler, "--concurrency", "x"],
        "bad duration": ["purge", "--db", db, "--feed", "jobs", "--older-than", "soon"],
    }
    env = watcher_env()
    for name in ("FEEDWATCH_DATABASE_URL", "FEEDWATCH_FEED", "FEEDWATCH_HANDLER"):
        env.pop(name, None)
    results = _parallel(list(cases.values()), env)
    for case, (code, out, err) in zip(cases, results, strict=True):
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2, f"{case}: exit {code}\n{err}"
        assert len(lines) == 1, f"{case}: {len(lines)} lines on stderr:\n{err}"
        assert lines[0].startswith("feedwatch: error: "), f"{case}: {lines[0]}"
        assert out == "", f"{case}: {out}"
    assert "tiger" not in "".join(r[2] for r in results)


@pytest.mark.slow
def test_every_command_works_end_to_end(handler: Handler, tmp_path: Path) -> None:
    """One story through every command; independent commands run at once to save imports."""
    db = fresh_sqlite(tmp_path, migrated=False)
    env = watcher_env()

    def fw(*args: str) -> list[str]:
        """A command with --db and --feed jobs, as an argument list."""
        return [args[0], "--db", db, "--feed", "jobs", *args[1:]]

    def run(*commands: list[str]) -> list[str]:
        """Run commands at once; each must succeed; their stdouts, in order."""
        outs = []
        for args, (code, out, err) in zip(commands, _parallel(list(commands), env), strict=True):
            assert code == 0, f"feedwatch {' '.join(args)} exited {code}: {err}"
            outs.append(out.strip())
        return outs

    def one(args: list[str], stdin: str | None = None) -> str:
        return ok(cli(*args, stdin=stdin)).strip()

    # migrate, twice: idempotent
    assert one(["migrate", "--db", db]) == "schema at revision 0001 (applied 1 migration(s))"
    assert one(["migrate", "--db", db]) == "schema at revision 0001 (already current)"
    # feed create / update / show / list
    assert (
        one(
            [
                "feed",
                "create",
                "--db",
                db,
                "jobs",
                "--feed-max-retries",
                "0",
                "--feed-backoff-base",
                "0.05",
                "--feed-backoff-cap",
                "0.1",
                "--feed-poll-delay",
                "0.05",
                "--feed-manual-checkpoint",
                "true",
            ]
        )
        == "feed jobs ready"
    )
    assert one(["feed", "update", "--db", db, "jobs", "--feed-poll-limit", "7"]) == (
        "feed jobs updated: poll_limit=7"
    )
    shown, table, listed = run(
        ["feed", "show", "--db", db, "jobs", "--output", "json"],
        ["feed", "show", "--db", db, "jobs"],
        ["feed", "list", "--db", db],
    )
    settings = json.loads(shown)
    assert (settings["manual_checkpoint"], settings["max_retries"], settings["poll_limit"]) == (
        True,
        0,
        7,
    )
    assert "poll_limit         7" in table
    assert listed.split() == ["jobs"]

    # enqueue: arguments, JSON lines, a JSON array, stdin, a delayed partition; then idempotence
    staged = [
        '{"id": "a", "data": {"behave": "gates", "last": 1}}',
        '{"id": "b", "data": {"behave": "gates", "last": 1}}',
    ]
    lines = tmp_path / "broken.jsonl"
    lines.write_text(
        '{"id": "x1", "data": {"behave": "broken_until_fixed"}}\n'
        '{"id": "x2", "data": {"behave": "broken_until_fixed"}}\n\n'
        '{"id": "ok", "data": {"behave": "ok"}}\n'
    )
    array = tmp_path / "other.json"
    array.write_text('[{"id": "y", "data": {"behave": "broken_until_fixed"}}, {"n": 1}]')
    added = run(
        fw("enqueue", "staged", *staged),
        fw("enqueue", "broken", "--file", str(lines), "--output", "json"),
        fw("enqueue", "other", "--file", str(array)),
        fw("enqueue", "later", "--not-before", "2099-01-01T00:00:00", '{"id": "t"}'),
    )
    assert added[0] == "partition staged: 2 added, 0 already there, gate 0 (created)"
    result = json.loads(added[1])
    assert (result["added"], result["created_partition"], result["gate"]) == (3, True, 0)
    assert added[2] == "partition other: 2 added, 0 already there, gate 0 (created)"
    assert added[3] == "partition later: 1 added, 0 already there, gate 0 (created)"
    assert one(fw("enqueue", "other", "--file", "-"), stdin='{"id": "z", "data": {}}\n') == (
        "partition other: 1 added, 0 already there, gate 0"
    )
    again, other = run(fw("enqueue", "staged", *staged), fw("items", "other", "-o", "json"))
    assert again == "partition staged: 0 added, 2 already there, gate 0"
    digest = hashlib.sha256(json.dumps({"n": 1}, sort_keys=True).encode()).hexdigest()[:16]
    assert [i["id"] for i in json.loads(other)] == ["y", digest, "z"]

    store = store_for(db)
    log = tmp_path / "watch.log"
    watcher = start_watch(db, "jobs", log, handler=handler.url)
    try:
        # Manual checkpoint: gate 0 done, `staged` waits at gate 1 for `gate`; `broken` and
        # `other` fail (the handler is broken, max_retries 0).
        def settled() -> bool:
            part = store.partition("jobs", "staged")
            gates = {i.gate for i in store.items(part.pk, status="available")}
            return (
                gates == {1}
                and part.owner is None
                and {store.partition("jobs", p).status for p in ("broken", "other")} == {"failed"}
            )

        wait_for(settled, timeout=60, message=lambda: "the first round: " + log_text(log)[-2000:])
        waiting, table, broken = run(
            fw("status", "staged", "-o", "json"),
            fw("status"),
            fw("status", "broken", "--output", "json"),
        )
        assert [(r["gate"], r["counts"]) for r in json.loads(waiting)] == [
            (0, [{"status": "available", "gate": 1, "items": 2}]),
        ]
        assert "failed item x1 at gate 0: broken until fixed" in table
        assert json.loads(broken)[0]["failed"] == [
            {"item": "x1", "gate": 0, "error": "broken until fixed"},
            {"item": "x2", "gate": 0, "error": "broken until fixed"},
        ]
        # gate: the partition moves on; retry: the fixed handler completes what failed
        handler.control(flags={"fixed": True})
        moved, retried = run(fw("gate", "staged", "1"), fw("retry", "broken"))
        assert (moved, retried) == ("partition staged: gate 0 -> 1", "re-drove 2 failed item(s)")
        assert one(fw("retry", "--all")) == "re-drove 1 failed item(s)"
        wait_for(
            lambda: all(
                store.partition("jobs", p).status == "complete" for p in ("staged", "broken", "other")
            ),
            timeout=60,
            message=lambda: "everything to complete: " + log_text(log)[-2000:],
        )
        items, page, nothing = run(
            fw("items", "staged", "--output", "json"),
            fw("items", "staged", "--status", "complete", "--limit", "1"),
            fw("retry", "--all"),
        )
        assert [(i["id"], i["status"], i["gate"], i["data"]["seen"]) for i in json.loads(items)] == [
            ("a", "complete", 1, [0, 1]),
            ("b", "complete", 1, [0, 1]),
        ]
        assert page.splitlines()[0].split()[1:3] == ["a", "complete"]
        assert page.splitlines()[1].startswith("(more: --after ")
        assert nothing == "re-drove 0 failed item(s)"
        assert one(fw("cancel", "later")) == "cancelled 1 open item(s)"
        later = json.loads(one(fw("status", "later", "-o", "json")))[0]
        assert (later["status"], later["error"]) == ("failed", "cancelled by user")
        assert one(fw("delete", "later")) == "deleted partition later and 1 item(s)"
        gone = cli(*fw("status", "later"))
        assert gone.returncode == 2
        assert "'later' does not exist" in gone.stderr
        assert watcher.poll() is None
    finally:
        codes = stop_all(watcher)
    assert codes == [0], log_text(log)[-3000:]
    assert_invariants(store, "jobs")
    # purge: nothing is a day old; then the history alone; then the complete partitions
    assert one(fw("purge", "--older-than", "1d")) == "purged 0 partition(s) and 0 history row(s)"
    purged = one(fw("purge", "--older-than", "0s", "--history-only")).split()
    assert purged[1] == "0", purged
    assert int(purged[4]) > 0, purged
    assert one(fw("purge", "--older-than", "0s")).startswith("purged 3 partition(s)")
    empty, table = run(fw("status", "--output", "json"), fw("status"))
    assert (json.loads(empty), table) == ([], "no partitions")
