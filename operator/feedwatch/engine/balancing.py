"""How many partitions a watcher should hold, and whom to ask for more.

The Change Feed Processor's rule: each watcher aims at
``ceil(active partitions / live watchers)``, capped by ``max_partitions``.
A watcher below target first takes free partitions; with none free it asks
the most loaded owner above target for one partition per interval (a steal
is a hand-off: see :mod:`feedwatch.engine.leasing`).
"""

from __future__ import annotations

import math


def target(active: int, live_watchers: int, cap: int) -> int:
    return min(cap, math.ceil(active / max(live_watchers, 1)))


def victim(loads: dict[str, int], me: str, goal: int) -> str | None:
    """The most loaded other owner holding more than ``goal``, if any."""
    candidates = [(n, owner) for owner, n in loads.items() if owner != me and n > goal]
    if not candidates:
        return None
    return max(candidates)[1]
