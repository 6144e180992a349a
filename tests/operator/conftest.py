"""Fixtures of the operator tests (defined in tests/support/operator.py)."""

from tests.support.operator import crd, operator_namespace, shared_operator

__all__ = ["crd", "operator_namespace", "shared_operator"]
