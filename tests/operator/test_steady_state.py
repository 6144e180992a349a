"""Steady state: 20 Ready FeedWatchers and nothing changing cost no write to the API server.

A write that changes nothing (a status patch that says what the status says,
a re-apply of an unchanged Deployment) is a hot loop in the making, and at
scale a load on the API server. The count comes from the API server itself:
the operator runs under its own ServiceAccount, and FlowSchemas matching only
that identity count its requests (tests/support/api_requests.py explains why
not ``apiserver_request_total``: it has no client label). The window is the
issue's 60 s; the setup is quick (the 20 FeedWatchers are created at once;
kwok makes their pods Ready without running them).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.api_requests import Counts, OperatorIdentity
from tests.support.kube_operator import (  # noqa: F401 - fixture
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    condition,
    crd,
    create_database_secret,
    create_feedwatcher,
    feedwatcher,
)
from tests.support.kubernetes import KubeEnv
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.kubernetes, pytest.mark.slow]

COUNT = 20
WINDOW = 60.0  # seconds: the figure
SETTLE_QUIET = 5.0  # seconds without a write before the window opens


def ready_names(kube: KubeEnv, namespace: str) -> set[str]:
    """FeedWatchers whose status judges their generation and says Ready=True."""
    listing = kube.custom_objects.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    return {
        fw["metadata"]["name"]
        for fw in listing["items"]
        if (fw.get("status") or {}).get("observedGeneration") == fw["metadata"]["generation"]
        and condition(fw, "Ready").get("status") == "True"
    }


@pytest.fixture
def counted_operator(
    crd: KubeEnv,  # noqa: F811
    namespace: str,
    tmp_path: Path,
) -> Iterator[tuple[OperatorProcess, OperatorIdentity]]:
    """The operator serving ``namespace`` under its own, counted identity."""
    identity = OperatorIdentity(crd, namespace=namespace)
    kubeconfig = identity.install(tmp_path / "operator.kubeconfig")
    operator = OperatorProcess(
        crd,
        namespaces=[namespace],
        log_path=tmp_path / "operator.log",
        env={"KUBECONFIG": str(kubeconfig)},
    )
    try:
        with operator:
            yield operator, identity
    finally:
        identity.uninstall()
    assert operator.returncode == 0, f"the operator exited {operator.returncode}\n{operator.log_tail()}"


def test_twenty_ready_feedwatchers_cost_no_api_write_and_no_reconcile_over_a_minute(
    kube: KubeEnv, namespace: str, counted_operator: tuple[OperatorProcess, OperatorIdentity]
) -> None:
    operator, identity = counted_operator
    create_database_secret(kube, namespace)
    run = uuid.uuid4().hex[:6]
    names = [f"steady-{n:02d}" for n in range(COUNT)]
    bodies = [feedwatcher(name, feed=f"steady{run}{n:02d}") for n, name in enumerate(names)]
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:  # the client's connection pool holds 10
        list(pool.map(lambda body: create_feedwatcher(kube, namespace, body), bodies))
    created = time.monotonic() - started
    wait_until(
        lambda: ready_names(kube, namespace) == set(names),
        timeout=120,
        message=lambda: (
            f"{COUNT} Ready FeedWatchers (ready now: "
            f"{sorted(ready_names(kube, namespace))})\n{operator.log_tail()}"
        ),
    )

    # The counting sees the operator: it wrote each Deployment and each status.
    setup = identity.counts()
    assert setup.writes["deployments"] >= COUNT, setup.describe()
    assert setup.writes["feedwatchers/status"] >= COUNT, setup.describe()

    ready = time.monotonic() - started
    # Let the trailing transitions land (e.g. Progressing: RollingOut -> Settled).
    quiet = settle(identity)
    print(
        f"\n{COUNT} FeedWatchers created in {created:.1f} s, all Ready after {ready:.1f} s, "
        f"no write for {SETTLE_QUIET:.0f} s after {time.monotonic() - started:.1f} s; "
        f"setup: {setup.describe()}"
    )
    reconciles = reconcile_count(operator)
    time.sleep(WINDOW)  # the measurement itself is a fixed window (the 60 s)
    window = identity.counts() - quiet
    assert operator.returncode is None, operator.log_tail()
    assert ready_names(kube, namespace) == set(names)
    print(f"\nsteady state over {WINDOW:.0f} s with {COUNT} Ready FeedWatchers: {window.describe()}")
    assert window.total_writes == 0, f"the operator wrote in steady state: {window.describe()}"
    assert window.reads > 0, "the counting saw no request at all (the Secret checks read)"
    assert reconcile_count(operator) == reconciles, "the operator re-reconciled in steady state"


def settle(identity: OperatorIdentity, timeout: float = 60.0) -> Counts:
    """Wait until the operator has written nothing for ``SETTLE_QUIET`` seconds; the counts then."""
    last = identity.counts()
    quiet_since = time.monotonic()
    deadline = quiet_since + timeout
    while time.monotonic() - quiet_since < SETTLE_QUIET:
        assert time.monotonic() < deadline, (
            f"the operator kept writing for {timeout:.0f} s: {last.describe()}"
        )
        time.sleep(0.5)
        now = identity.counts()
        if now.total_writes != last.total_writes:
            quiet_since = time.monotonic()
        last = now
    return last


def reconcile_count(operator: OperatorProcess) -> float:
    """Every reconcile the operator made so far, whatever the outcome."""
    total = 0.0
    for line in operator.metrics().splitlines():
        if line.startswith("feedwatch_operator_reconciles_total{"):
            total += float(line.split()[-1])
    return total
