"""Fixtures of the fault suite: a scenario (handler, fleets, proxies) per test, MariaDB servers.

Most faults run on the shared MariaDB of ``hack/databases`` (the conftest's
``FEEDWATCH_TEST_MARIADB_URL``); the faults that restart the server or make
it read-only get a MariaDB of the suite's own (:class:`MariaDBServer`).
Measured recovery times are printed by each test and gathered in a table at
the end of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from feedwatch import migrate
from tests.conftest import database_url
from tests.support.faults import MariaDBServer, RecoveryLog, Scenario

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


@pytest.fixture
def mariadb_url(sqlite_url: str) -> str:
    """The shared MariaDB (migrated once per session)."""
    return database_url("mariadb", sqlite_url)


@pytest.fixture(scope="session")
def own_mariadb() -> Iterator[MariaDBServer]:
    """A MariaDB of the suite's own, for the faults that restart it or make it read-only."""
    server = MariaDBServer().install()
    try:
        migrate(server.app_url)
        yield server
    finally:
        server.destroy()


@pytest.fixture
def scenario(tmp_path: Path) -> Iterator[Scenario]:
    s = Scenario(tmp_path)
    try:
        yield s
    finally:
        s.close()
