"""Fixtures of the operator tests (most defined in tests/support/kube_operator.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from feedwatch import Store
from tests.support.handler import Handler
from tests.support.kube_operator import MARIADB_URL, crd, operator_namespace, shared_operator
from tests.support.kubernetes import KubeEnv
from tests.support.process_node import ProcessNode, process_node

__all__ = ["crd", "operator_namespace", "shared_operator"]


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    """The MariaDB the operator tests' FeedWatchers use (their Secrets hold its URL)."""
    opened = Store.open(MARIADB_URL, pool_size=4)
    yield opened
    opened.close()


@pytest.fixture
def handler(tmp_path: Path) -> Iterator[Handler]:
    """A real HTTP handler process."""
    with Handler(tmp_path, "handler") as running:
        yield running


@pytest.fixture
def node(kube: KubeEnv, operator_namespace: str, tmp_path: Path) -> Iterator[ProcessNode]:
    """The process node: runs the test namespace's pods as local processes."""
    with process_node(kube, operator_namespace, tmp_path / "node") as running:
        yield running
