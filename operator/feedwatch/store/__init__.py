"""The store: all SQL of feedwatch behind methods named by intent.

The engine and the producer API never build SQL; dialect differences live in
:mod:`feedwatch.store.dialects`.
"""

from feedwatch.store.connection import connect
from feedwatch.store.migrating import current_revision, head_revision, migrate
from feedwatch.store.records import (
    ClaimBatch,
    Claimed,
    ClaimRequest,
    HistoryRow,
    ItemOutcome,
    ItemRow,
    LeaseRow,
    PartitionRow,
    PartitionSummary,
)
from feedwatch.store.store import Store

__all__ = [
    "ClaimBatch",
    "ClaimRequest",
    "Claimed",
    "HistoryRow",
    "ItemOutcome",
    "ItemRow",
    "LeaseRow",
    "PartitionRow",
    "PartitionSummary",
    "Store",
    "connect",
    "current_revision",
    "head_revision",
    "migrate",
]
