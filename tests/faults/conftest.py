"""Fixtures of the fault suite: a scenario (handler, fleets, proxies) per test, database servers.

Each fault runs once on MariaDB and once on PostgreSQL (``database``; the
selection of ``FEEDWATCH_TEST_DATABASES`` applies). Most run on the shared
servers of ``hack/databases`` (``shared_url``); the faults that restart the
server, make it read-only, count its deadlocks or freeze a client holding
its locks get a server of the suite's own (``own_server``:
:class:`MariaDBServer` or :class:`PostgresServer`, one per session, started
when first needed). Measured recovery times are printed by each test and
gathered in a table at the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedwatch import migrate
from tests.conftest import ALL_DATABASES, database_url
from tests.support.faults import MariaDBServer, OwnServer, PostgresServer, RecoveryLog, Scenario

#: The servers every fault runs on. SQLite has its own fault tests, and so has the
#: Galera cluster (test_galera_faults.py: a node killed, a node cut off): these
#: faults drive a single server of their own (restart, crash, read-only).
SERVERS = [d for d in ALL_DATABASES if d in ("mariadb", "postgresql")]

_recovery = RecoveryLog()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _recovery.rows:
        terminalreporter.section("fault suite: measured recovery times")
        terminalreporter.write_line(_recovery.table())
        path = os.environ.get("FEEDWATCH_FAULTS_REPORT")
        if path:
            Path(path).write_text(_recovery.table() + "\n")


@pytest.fixture(scope="session")
def recovery() -> RecoveryLog:
    return _recovery


@pytest.fixture(params=SERVERS)
def database(request: pytest.FixtureRequest) -> str:
    """``mariadb`` or ``postgresql``: each test that takes it runs on both."""
    return str(request.param)


@pytest.fixture
def shared_url(database: str, sqlite_url: str) -> str:
    """The shared server of ``hack/databases`` (migrated once per session)."""
    return database_url(database, sqlite_url)


@pytest.fixture(scope="session")
def own_mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB of the suite's own."""
    server = MariaDBServer().install()
    try:
        migrate(server.app_url)
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="session")
def own_postgresql() -> Iterator[PostgresServer]:
    """A PostgreSQL of the suite's own."""
    server = PostgresServer().install()
    try:
        migrate(server.app_url)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def own_server(database: str, request: pytest.FixtureRequest) -> OwnServer:
    """A server of the suite's own, of the test's ``database``: for the faults that restart it,
    make it read-only, count its deadlocks, or freeze a client that holds its locks."""
    server: OwnServer = request.getfixturevalue(f"own_{database}")
    return server


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    s = Scenario(tmp_path)
    try:
        yield s
    finally:
        s.close()
