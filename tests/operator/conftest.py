"""Fixtures of the operator tests (defined in tests/support/kube_operator.py)."""

from tests.support.kube_operator import crd, operator_namespace, shared_operator

__all__ = ["crd", "operator_namespace", "shared_operator"]
