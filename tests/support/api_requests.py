"""Count one client's requests to the API server, as the API server itself sees them.

The kube-apiserver's ``apiserver_request_total`` has no client label (only
verb, resource, code, ...), and the test environment enables no audit log.
API Priority and Fairness does classify every request by who made it: a
FlowSchema matches a subject and verbs/resources, and the API server counts
the requests each FlowSchema dispatched in
``apiserver_flowcontrol_dispatched_requests_total{flow_schema=...}``.

So the operator runs under its own identity (a ServiceAccount with a token
kubeconfig, bound to cluster-admin: RBAC is not what is measured here), and
FlowSchemas that match only that ServiceAccount sort its requests into
writes per resource and reads. They route to the ``exempt`` priority level,
so counting never throttles the operator. Nothing else in the cluster uses
that identity, so the counts are the operator's alone, whatever the test or
the controllers do meanwhile.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kubernetes import KubeEnv

WRITE_VERBS = ["create", "update", "patch", "delete", "deletecollection"]
PREFIX = "feedwatch-count-"
#: Writes sorted by what they write; the first match (lowest precedence) wins.
WRITE_GROUPS: dict[str, tuple[list[str], list[str]]] = {
    "feedwatchers/status": (["feedwatch.dev"], ["feedwatchers/status"]),
    "feedwatchers": (["feedwatch.dev"], ["feedwatchers"]),
    "deployments": (["apps"], ["deployments", "deployments/scale"]),
    "events": (["", "events.k8s.io"], ["events"]),
    "other": (["*"], ["*"]),
}


@dataclass(frozen=True)
class Counts:
    """Requests of the counted identity: writes per resource, and reads (every other verb)."""

    writes: Mapping[str, int]
    reads: int

    @property
    def total_writes(self) -> int:
        return sum(self.writes.values())

    @property
    def total(self) -> int:
        return self.total_writes + self.reads

    def __sub__(self, before: Counts) -> Counts:
        return Counts(
            {k: v - before.writes.get(k, 0) for k, v in self.writes.items()},
            self.reads - before.reads,
        )

    def describe(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in self.writes.items() if v)
        return f"{self.total_writes} writes ({parts or 'none'}), {self.reads} reads"


def _flow_schema(
    name: str, precedence: int, subject: Mapping[str, object], rules: Mapping[str, object]
) -> dict[str, object]:
    return {
        "apiVersion": "flowcontrol.apiserver.k8s.io/v1",
        "kind": "FlowSchema",
        "metadata": {"name": name},
        "spec": {
            "matchingPrecedence": precedence,
            "priorityLevelConfiguration": {"name": "exempt"},
            "rules": [{"subjects": [subject], **rules}],
        },
    }


class OperatorIdentity:
    """A ServiceAccount for the operator, its token kubeconfig, and the FlowSchemas that count it."""

    def __init__(self, kube: KubeEnv, namespace: str = "feedwatch-system", name: str = "feedwatch-operator"):
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.label = f"{namespace}-{name}"  # FlowSchema names must be unique per identity

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.name}"

    def install(self, kubeconfig: Path) -> Path:
        """Create the identity and the FlowSchemas; write a kubeconfig that uses it to ``kubeconfig``."""
        objects: list[dict[str, object]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": self.name, "namespace": self.namespace},
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": f"{PREFIX}{self.label}"},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "cluster-admin",
                },
                "subjects": [{"kind": "ServiceAccount", "name": self.name, "namespace": self.namespace}],
            },
        ]
        subject: dict[str, Any] = {
            "kind": "ServiceAccount",
            "serviceAccount": {"name": self.name, "namespace": self.namespace},
        }
        for n, (group, (api_groups, resources)) in enumerate(WRITE_GROUPS.items()):
            rule: dict[str, Any] = {
                "verbs": WRITE_VERBS,
                "apiGroups": api_groups,
                "resources": resources,
                "namespaces": ["*"],
                "clusterScope": True,
            }
            objects.append(
                _flow_schema(self._schema("write", group), 50 + n, subject, {"resourceRules": [rule]})
            )
        everything: dict[str, Any] = {
            "resourceRules": [
                {
                    "verbs": ["*"],
                    "apiGroups": ["*"],
                    "resources": ["*"],
                    "namespaces": ["*"],
                    "clusterScope": True,
                }
            ],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        }
        objects.append(_flow_schema(self._schema("read", "all"), 60, subject, everything))
        self.kube.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
        )
        token = self.kube.kubectl(
            "create", "token", self.name, "-n", self.namespace, "--duration", "24h"
        ).stdout.strip()
        admin = json.loads(self.kube.kubectl("config", "view", "--raw", "-o", "json").stdout)
        cluster = admin["clusters"][0]
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [cluster],
            "users": [{"name": self.name, "user": {"token": token}}],
            "contexts": [{"name": self.name, "context": {"cluster": cluster["name"], "user": self.name}}],
            "current-context": self.name,
        }
        kubeconfig.write_text(json.dumps(config))
        kubeconfig.chmod(0o600)
        return kubeconfig

    def uninstall(self) -> None:
        """Delete the cluster-scoped parts (the ServiceAccount goes with its namespace)."""
        names = [self._schema("write", group) for group in WRITE_GROUPS] + [self._schema("read", "all")]
        self.kube.kubectl("delete", "flowschema", *names, "--ignore-not-found", check=False)
        self.kube.kubectl(
            "delete", "clusterrolebinding", f"{PREFIX}{self.label}", "--ignore-not-found", check=False
        )

    def _schema(self, kind: str, group: str) -> str:
        return f"{PREFIX}{self.label}-{kind}-{group.replace('/', '-')}"

    def counts(self) -> Counts:
        """The requests dispatched so far for this identity, read from the API server's /metrics."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.kube.kubectl("get", "--raw", "/metrics", timeout=60).stdout
        by_schema: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "apiserver_flowcontrol_dispatched_requests":
                continue
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    schema = sample.labels.get("flow_schema", "")
                    by_schema[schema] = by_schema.get(schema, 0) + sample.value
        writes = {group: int(by_schema.get(self._schema("write", group), 0)) for group in WRITE_GROUPS}
        return Counts(writes, int(by_schema.get(self._schema("read", "all"), 0)))
