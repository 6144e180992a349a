"""`watch --migrate` from many replicas at once, and a schema newer than this feedwatch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from feedwatch import Feed, Store
from feedwatch.store import head_revision
from feedwatch.testing import assert_invariants, wait_for
from tests.service.helpers import (
    alembic_revision,
    cli,
    fresh_mariadb,
    fresh_sqlite,
    history,
    log_text,
    set_alembic_revision,
    start_watch,
    stop_all,
)
from tests.support.handler import Handler

pytestmark = pytest.mark.service

FUTURE = "9999_from_the_future"


@pytest.mark.slow
def test_three_watchers_with_migrate_on_an_empty_mariadb_one_migrates_and_all_run(
    handler: Handler, tmp_path: Path
) -> None:
    with fresh_mariadb("fw_mig") as url:
        logs = [tmp_path / f"w{n}.log" for n in range(3)]
        args = ["--migrate", "--create-feed", "--log-format", "json", "--max-partitions", "2"]
        procs = [start_watch(url, "mig", log, handler=handler.url, args=args) for log in logs]
        store: Store | None = None
        try:

            def all_live() -> bool:
                nonlocal store
                if store is None:
                    if alembic_revision_or_none(url) != head_revision():
                        return False
                    store = Store.open(url)
                return len(store.live_watchers("mig", store.now())) == 3

            wait_for(all_live, timeout=90, message=lambda: "three live watchers: " + _tails(logs))
            assert store is not None
            feed = Feed(store, "mig")
            parts = [f"p{n}" for n in range(6)]
            # Each call takes 1 s, so no watcher can finish its two partitions and take a
            # third before every watcher holds its share (max 2 each): all three must work.
            for part in parts:
                feed.enqueue(part, {f"i{n}": {"behave": "gates", "last": 1, "delay": 1} for n in range(4)})
            wait_for(
                lambda: all(feed.partition(p).status == "complete" for p in parts),
                timeout=60,
                message=lambda: "the work to complete: " + _tails(logs),
            )
            assert all(p.poll() is None for p in procs), _tails(logs)
            owners = {h.owner for h in history(store, "mig", event="complete")}
            assert_invariants(store, "mig")
        finally:
            codes = stop_all(*procs)
            if store is not None:
                store.close()
        assert codes == [0, 0, 0], _tails(logs)
        actions = [_actions(log) for log in logs]
        migrated = [a for a in actions if "schema_migrated" in a]
        current = [a for a in actions if "schema_current" in a]
        assert (len(migrated), len(current)) == (1, 2), actions
        assert len(owners) == 3, f"only {len(owners)} of the 3 watchers completed items"
        assert alembic_revision(url) == head_revision()


def test_watcher_refuses_a_schema_newer_than_it_knows_on_sqlite(tmp_path: Path) -> None:
    url = fresh_sqlite(tmp_path)
    ok_feed(url)
    set_alembic_revision(url, FUTURE)
    _assert_refused(url)


def test_watcher_refuses_a_schema_newer_than_it_knows_on_mariadb() -> None:
    with fresh_mariadb("fw_new") as url:
        result = cli("migrate", "--db", url)
        assert result.returncode == 0, result.stderr
        ok_feed(url)
        set_alembic_revision(url, FUTURE)
        _assert_refused(url)


def test_watch_migrate_refuses_a_schema_newer_than_it_knows(tmp_path: Path) -> None:
    """`watch --migrate` (what every replica runs) must refuse just as clearly, not crash."""
    url = fresh_sqlite(tmp_path)
    ok_feed(url)
    set_alembic_revision(url, FUTURE)
    _assert_refused(url, "--migrate")
    result = cli("migrate", "--db", url)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "newer than this feedwatch knows" in result.stderr


# -- helpers ------------------------------------------------------------------------


def ok_feed(url: str) -> None:
    result = cli("feed", "create", "--db", url, "mig")
    assert result.returncode == 0, result.stderr


def _assert_refused(url: str, *extra: str) -> None:
    result = cli(
        "watch",
        "--db",
        url,
        "--feed",
        "mig",
        "--handler",
        "http://127.0.0.1:9/",
        "--health-port",
        "0",
        *extra,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert f"schema revision '{FUTURE}', newer than this feedwatch knows" in lines[0]
    assert "upgrade feedwatch" in lines[0]
    assert alembic_revision(url) == FUTURE  # untouched


def alembic_revision_or_none(url: str) -> str | None:
    try:
        return alembic_revision(url)
    except Exception:
        return None


def _actions(log: Path) -> list[str]:
    return [json.loads(line).get("action", "") for line in log_text(log).splitlines() if line]


def _tails(logs: list[Path]) -> str:
    return "".join(f"\n--- {log.name}\n{log_text(log)[-2000:]}" for log in logs)
