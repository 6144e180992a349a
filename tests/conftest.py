"""Shared fixtures: real databases, a fresh feed per test, watcher processes.

Databases come from ``FEEDWATCH_TEST_MARIADB_URL``,
``FEEDWATCH_TEST_POSTGRES_URL`` and ``FEEDWATCH_TEST_GALERA_URL`` (loopback
defaults match ``hack/databases``; the Galera URL lists its three nodes, so a
pool spreads over them). ``FEEDWATCH_TEST_DATABASES`` picks which to run
for the tests that take ``db_url`` (default: all four: sqlite, mariadb,
postgresql and galera, so the store, engine, service and demo suites run on
the cluster too; ``make test-fast`` sets ``sqlite``). The Galera cluster's
own tests (``test_galera*.py``) run whenever ``galera`` is selected. A database that is selected but
unreachable FAILS its tests: nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from feedwatch import Feed, Store, migrate
from feedwatch.store import connect
from feedwatch.testing import assert_invariants

pytest_plugins = ["tests.support.kubernetes"]

MARIADB_URL = os.environ.get(
    "FEEDWATCH_TEST_MARIADB_URL", "mysql+pymysql://feedwatch:feedwatch@127.0.0.1:13306/feedwatch"
)
POSTGRES_URL = os.environ.get(
    "FEEDWATCH_TEST_POSTGRES_URL", "postgresql+psycopg://feedwatch:feedwatch@127.0.0.1:15432/feedwatch"
)
GALERA_URL = os.environ.get(
    "FEEDWATCH_TEST_GALERA_URL",
    "mysql+pymysql://feedwatch:feedwatch@127.0.0.1:13316/feedwatch?host=127.0.0.1:13317&host=127.0.0.1:13318",
)
SELECTED = os.environ.get("FEEDWATCH_TEST_DATABASES", "sqlite,mariadb,postgresql,galera").split(",")
ALL_DATABASES = [d for d in ("sqlite", "mariadb", "postgresql", "galera") if d in SELECTED]
#: The Galera cluster's own tests: when it is selected (by default).
GALERA_TESTS = "galera" in SELECTED
collect_ignore_glob = [] if GALERA_TESTS else ["*/test_galera*.py"]


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'feedwatch.db'}"


_migrated: dict[str, str] = {}


def _prepare(url: str) -> str:
    if url not in _migrated:
        try:
            engine = connect(url)
            try:
                migrate(engine)
            finally:
                engine.dispose()
        except Exception as error:  # a selected database must be there: fail, never skip
            pytest.fail(
                f"database {url.rsplit('@', maxsplit=1)[-1]} is unavailable: {error}. "
                "Start it with `hack/databases up` (Galera: `hack/databases up galera`)."
            )
        _migrated[url] = url
    return url


def database_url(name: str, sqlite_url: str) -> str:
    urls = {"sqlite": sqlite_url, "mariadb": MARIADB_URL, "postgresql": POSTGRES_URL, "galera": GALERA_URL}
    return _prepare(urls[name])


@pytest.fixture(params=ALL_DATABASES)
def db_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    """Each test that takes it runs once per selected database."""
    return database_url(request.param, sqlite_url)


@pytest.fixture(params=[d for d in ALL_DATABASES if d in ("sqlite", "mariadb", "galera")])
def db_url_sqlite_mariadb(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    return database_url(request.param, sqlite_url)


_stores: dict[str, Store] = {}


@pytest.fixture(scope="session", autouse=True)
def _close_stores() -> Iterator[None]:
    yield
    for store in _stores.values():
        store.close()


@pytest.fixture
def store(db_url: str) -> Store:
    if db_url not in _stores:
        _stores[db_url] = Store.open(db_url, pool_size=10)
    return _stores[db_url]


@pytest.fixture
def feed_name() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def feed(store: Store, feed_name: str) -> Iterator[Feed]:
    """A fresh feed (a clean slate in the shared schema); invariants are checked after the test."""
    created = Feed.create(store, feed_name, backoff_base=0.05, backoff_cap=0.2, poll_delay=0.05)
    yield created
    assert_invariants(store, feed_name)


@pytest.fixture
def tmp_dir(tmp_path: Path) -> Path:
    return tmp_path
