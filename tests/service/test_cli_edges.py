"""Edge inputs to the real ``feedwatch`` CLI: one clear line and exit 2, never a traceback.

Issue 10, finding 7: each of these used to end in a raw traceback, a value
stored as a Python repr, a time shifted by its UTC offset, or a database
error. Every command runs as a subprocess on each database (the commands of
one table at once, to save their start-up time).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from feedwatch import Feed, Store
from tests.conftest import database_url
from tests.service.helpers import cli_parallel, store_for
from tests.support.processes import watcher_env

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _env() -> dict[str, str]:
    env = watcher_env()
    for name in ("FEEDWATCH_DATABASE_URL", "FEEDWATCH_FEED"):
        env.pop(name, None)
    return env


def test_edge_inputs_are_one_line_usage_errors(sqlite_url: str, tmp_path: Path) -> None:
    """On SQLite only: each is refused before anything is written (the store suite covers
    the same refusals of the Python API on every database)."""
    db_url = database_url("sqlite", sqlite_url)
    store = store_for(db_url)
    feed = Feed.create(store, f"e{uuid.uuid4().hex[:12]}")
    feed.enqueue("p", {"a": 1})
    not_utf8 = tmp_path / "latin1.jsonl"
    not_utf8.write_bytes(b'{"id": "caf\xe9"}\n')

    def fw(*args: str) -> list[str]:
        return [args[0], "--db", db_url, "--feed", feed.name, *args[1:]]

    cases: dict[str, tuple[list[str], str]] = {
        "missing --file": (
            fw("enqueue", "p", "--file", str(tmp_path / "nope.jsonl")),
            "nope.jsonl: cannot read it: No such file or directory",
        ),
        "--file not UTF-8": (fw("enqueue", "p", "--file", str(not_utf8)), "not UTF-8 text"),
        "--gate 2**31": (fw("enqueue", "p", "--gate", "2147483648", "{}"), "from 0 to 2147483647"),
        "--gate -1": (fw("enqueue", "p", "--gate", "-1", "{}"), "from 0 to 2147483647"),
        "gate command out of range": (fw("gate", "p", "99999999999"), "from 0 to 2147483647"),
        "items --gate out of range": (fw("items", "p", "--gate", "2147483648"), "from 0 to 2147483647"),
        "content type too long": (
            fw("enqueue", "p", "--content-type", "a/" + "b" * 300, '{"id": "x"}'),
            "content type must be a non-empty string of at most 200 characters",
        ),
        "negative --limit": (
            fw("items", "p", "--limit", "-1"),
            "argument --limit: a page size must be from 1 to 100000, not",
        ),
        "zero --limit": (
            fw("items", "p", "--limit", "0"),
            "argument --limit: a page size must be from 1 to 100000, not",
        ),
        "negative --after": (fw("items", "p", "--after", "-5"), "argument --after: a pk must be from 0 to"),
        "huge --after": (fw("items", "p", "--after", "9" * 30), "argument --after: a pk must be from 0 to"),
        "huge --older-than": (fw("purge", "--older-than", "99999999999d"), "is too long: at most 36500d"),
        "endless --older-than": (fw("purge", "--older-than", "9" * 400 + "d"), "is too long"),
        "id null": (
            fw("enqueue", "p", '{"id": null}'),
            'item 1: "id" must be a string or an integer, not null',
        ),
        "id object": (fw("enqueue", "p", '{"id": 1}', '{"id": {"k": 1}}'), 'item 2: "id" must be a string'),
        "id array": (fw("enqueue", "p", '{"id": ["a"]}'), 'not ["a"]'),
        "id true": (fw("enqueue", "p", '{"id": true}'), "not true"),
        "newline in an item id": (
            fw("enqueue", "p", '{"id": "a\\nb"}'),
            "item id 'a\\nb' contains a control character (U+000A at position 1)",
        ),
        "control character in a partition id": (
            fw("enqueue", "p\x01", '{"id": "a"}'),
            "partition id 'p\\x01' contains a control character (U+0001 at position 1)",
        ),
        "--not-before not a time": (fw("enqueue", "p", "--not-before", "soon", "{}"), "is not an ISO time"),
    }
    results = cli_parallel([args for args, _ in cases.values()], _env())
    for (case, (_, expected)), result in zip(cases.items(), results, strict=True):
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2, f"{case}: exit {result.returncode}\n{result.stderr}"
        assert len(lines) == 1, f"{case}: {len(lines)} lines on stderr:\n{result.stderr}"
        assert lines[0].startswith("feedwatch: error: "), f"{case}: {lines[0]}"
        assert expected in lines[0], f"{case}: {lines[0]!r} does not say {expected!r}"
        assert result.stdout == "", f"{case}: {result.stdout}"
    assert [r.id for r in feed.items("p")] == ["a"], "nothing refused was written"


def test_not_before_keeps_its_offset_and_integer_ids_and_retry_all_stay_in_their_feed(
    db_url: str, store: Store
) -> None:
    feed = Feed.create(store, f"e{uuid.uuid4().hex[:12]}")
    other = Feed.create(store, f"o{uuid.uuid4().hex[:12]}")
    for target in (feed, other):
        target.enqueue("gone", {"x": 1})
        target.cancel("gone")

    def fw(*args: str) -> list[str]:
        return [args[0], "--db", db_url, "--feed", feed.name, *args[1:]]

    results = cli_parallel(
        [
            fw("enqueue", "east", "--not-before", "2030-01-31T12:00:00+05:30", '{"id": "a"}'),
            fw("enqueue", "naive", "--not-before", "2030-01-31T12:00:00", '{"id": "a"}'),
            fw("enqueue", "zulu", "--not-before", "2030-01-31T12:00:00Z", '{"id": "a"}'),
            fw("enqueue", "numbers", '{"id": 7, "data": 1}', '{"id": "7b", "data": 2}'),
            fw("retry", "--all"),
        ],
        _env(),
    )
    for result in results:
        assert result.returncode == 0, f"{result.args[3:]}: {result.stderr}"
    assert results[4].stdout.strip() == "re-drove 1 failed item(s)"
    due = {p: feed.items(p)[0].next_attempt_at for p in ("east", "naive", "zulu")}
    assert due == {
        "east": datetime(2030, 1, 31, 6, 30),
        "naive": datetime(2030, 1, 31, 12, 0),
        "zulu": datetime(2030, 1, 31, 12, 0),
    }
    assert [r.id for r in feed.items("numbers")] == ["7", "7b"]
    assert json.loads(feed.items("numbers")[0].data or b"") == 1
    assert feed.partition("gone").status == "available"
    assert other.partition("gone").status == "failed", "retry --all touched another feed"
    assert [r.status for r in other.items("gone")] == ["failed"]
