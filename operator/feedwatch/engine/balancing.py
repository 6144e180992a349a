"""How many partitions a watcher should hold, whom to ask for more, and when to give one.

The Change Feed Processor's rule: each watcher aims at
``ceil(active partitions / live watchers)``, capped by ``max_partitions``.
A watcher below target first takes free partitions; with none free it asks
the most loaded owner above target for one partition per interval (a steal
is a hand-off: see :mod:`feedwatch.engine.leasing`). Pure functions: the lease
keeper reads the counts and acts on the answers.
"""

from __future__ import annotations

import math


def target(active: int, live_watchers: int, cap: int) -> int:
    """The partitions one watcher should hold: a fair share of the active ones, at most ``cap``."""
    return min(cap, math.ceil(active / max(live_watchers, 1)))


def victim(loads: dict[str, int], me: str, goal: int) -> str | None:
    """The most loaded other owner holding more than ``goal``, if any."""
    candidates = [(n, owner) for owner, n in loads.items() if owner != me and n > goal]
    if not candidates:
        return None
    return max(candidates)[1]


def may_give(*, held: int, goal: int, held_for: float, settle: float) -> bool:
    """Whether to honour a steal request: only above target, and not for a partition just received.

    ``held_for``: seconds since this watcher received the partition; it must
    have held it ``settle`` seconds (a renewal period, time to work it once)
    before it moves again, or two watchers could pass the last partitions back
    and forth forever without either working them.
    """
    return held_for >= settle and held > goal
