"""The engine: leases partitions, dispatches their items, checkpoints with gates."""

from feedwatch.engine.watcher import Watcher

__all__ = ["Watcher"]
