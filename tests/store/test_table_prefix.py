"""Table prefixes: deployments kept apart in one database, and prefixes refused before any SQL.

A prefix is written into every statement as part of a table name, so it must
need no quoting on any database: the FeedWatcher CRD's rule (lowercase letter,
then lowercase letters, digits and underscores, at most 30) holds for the
library and the CLI too.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import inspect

from feedwatch import ConfigurationError, Feed, Store
from feedwatch.store.connection import connect
from feedwatch.store.migrating import migrate
from tests.service.helpers import cli

pytestmark = pytest.mark.store

BAD = ["Team_", "1team", "_team", "team-a", "team a", "team;drop", "t" * 31, "tëam"]


@pytest.fixture
def prefix(db_url: str) -> Iterator[str]:
    """A fresh prefix with its own tables, dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:8]}_"
    migrate(db_url, prefix=name)
    yield name
    engine = connect(db_url)
    try:
        with engine.begin() as conn:
            for table in inspect(conn).get_table_names():  # no foreign keys: any order
                if table.startswith(name):
                    conn.exec_driver_sql(f"DROP TABLE {table}")
    finally:
        engine.dispose()


def _tables(url: str) -> list[str]:
    engine = connect(url)
    try:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()
    finally:
        engine.dispose()


def test_a_prefixed_deployment_has_its_own_tables_and_feeds(
    db_url: str, prefix: str, store: Store, feed_name: str
) -> None:
    prefixed = Store.open(db_url, prefix=prefix)
    try:
        feed = Feed.create(prefixed, feed_name)
        feed.enqueue("p", {"a": 1, "b": 2})
        assert {f"{prefix}{t}" for t in ("feeds", "partitions", "items", "history")} <= set(_tables(db_url))
        assert [p.id for p in feed.partitions()] == ["p"]
        assert sorted(i.id for i in feed.items("p")) == ["a", "b"]
        assert feed_name in prefixed.feed_names()
        assert feed_name not in store.feed_names(), "the unprefixed tables know nothing of it"
    finally:
        prefixed.engine.dispose()


@pytest.mark.parametrize("bad", BAD)
def test_an_unusable_prefix_is_refused_before_anything_is_written(db_url: str, bad: str) -> None:
    before = _tables(db_url)
    for attempt in (lambda: migrate(db_url, prefix=bad), lambda: Store.open(db_url, prefix=bad)):
        with pytest.raises(
            ConfigurationError, match=r"table prefix .* lowercase letters, digits and underscores"
        ):
            attempt()
    assert _tables(db_url) == before, "no table created"


def test_the_cli_refuses_an_unusable_prefix_as_a_usage_error(db_url: str) -> None:
    run = cli("migrate", "--db", db_url, "--table-prefix", "Team-")
    assert run.returncode == 2, run.stderr
    assert "table prefix 'Team-' is not usable" in run.stderr
    assert "Traceback" not in run.stderr
