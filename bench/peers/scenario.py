"""``python -m bench --scenarios peers``: each peer on this database, next to feedwatch's figure.

feedwatch's figure is scenario 1's (tuned, history on) when scenario 1 ran
on this database in the same run, else one scenario 1 run made here. Each
peer runs once (the slow ones take minutes), with its timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bench.figures import Target, fmt
from bench.peers import runner

if TYPE_CHECKING:
    from bench.cli import Context
    from bench.harness import Database

#: Seconds one peer run may take before it is killed and reported as failed.
TIMEOUT = 600.0
FEEDWATCH_VARIANT = "tuned, history on"
GOAL = 10.0


def peers_for(database: str, wanted: list[str] | None = None) -> list[str]:
    return [p for p in (wanted or runner.PEERS) if database in runner.peer_module(p).DATABASES]


def feedwatch_figure(ctx: Context, db: Database) -> tuple[float, float] | None:
    """feedwatch's item-gates/s and fan-in median on ``db`` in this run (running scenario 1 if needed)."""
    rate = ctx.report.find("1", db.label, FEEDWATCH_VARIANT, "item-gates/s")
    fanin = ctx.report.find("1", db.label, FEEDWATCH_VARIANT, "fan-in latency median")
    if rate is not None:
        return rate.median, fanin.median if fanin else float("nan")
    run = ctx.attempt("peers", db, "feedwatch, tuned, history on", workload=ctx.size.s1,
                      config=ctx.tuned, history=True)  # fmt: skip
    if run is None:
        return None
    ctx.figure("peers", db, f"feedwatch, {FEEDWATCH_VARIANT}", "item-gates/s", "item-gates/s").values = [
        run.rate
    ]
    ctx.figure("peers", db, f"feedwatch, {FEEDWATCH_VARIANT}", "fan-in latency median", "s").values = [
        run.fanin_median
    ]
    print(f"  feedwatch ({FEEDWATCH_VARIANT}): {fmt(run.rate)} item-gates/s, fan-in median "
          f"{run.fanin_median:.3f} s", flush=True)  # fmt: skip
    return run.rate, run.fanin_median


def scenario(ctx: Context, db: Database) -> None:
    workload = ctx.size.s1
    wanted = [p.strip() for p in ctx.args.peers.split(",")] if ctx.args.peers else None
    outcomes = []
    for peer in peers_for(db.name, wanted):
        outcome = runner.run(
            peer, db.name, db.url, ctx.work, partitions=workload.partitions, items=workload.items,
            timeout=ctx.args.peer_timeout,
        )  # fmt: skip
        outcomes.append(outcome)
        shape = "fan-out/fan-in" if outcome.fanin else "independent jobs"
        if outcome.error:
            print(f"  {peer} ({shape}): failed: {outcome.error}", flush=True)
            continue
        fanin = f", fan-in median {outcome.fanin_median:.3f} s" if outcome.fanin else ""
        print(f"  {peer} ({shape}): {fmt(outcome.rate)} tasks/s ({outcome.wall:.1f} s){fanin}", flush=True)
        variant = f"{peer} ({shape})"
        ctx.figure("peers", db, variant, "tasks/s", "tasks/s").values = [outcome.rate]
        if outcome.fanin:
            ctx.figure("peers", db, variant, "fan-in latency median", "s").values = [outcome.fanin_median]
    feedwatch = feedwatch_figure(ctx, db)
    ctx.report.peers[db.label] = (feedwatch, outcomes)
    if feedwatch is None:
        return
    for with_fanin, label, target in ((True, "fan-in peer", Target(">=", GOAL, f">= {GOAL:g}x")),
                                 (False, "independent-jobs peer", None)):  # fmt: skip
        done = [o for o in outcomes if o.fanin is with_fanin and not o.error]
        if not done:
            continue
        best = max(done, key=lambda o: o.rate)
        ratio = ctx.figure("peers", db, f"feedwatch / best {label} ({best.peer})", "throughput ratio", "x",
                           target=target)  # fmt: skip
        ratio.values = [feedwatch[0] / best.rate]
        print(f"  feedwatch / best {label} ({best.peer}): {feedwatch[0] / best.rate:.1f}x", flush=True)
