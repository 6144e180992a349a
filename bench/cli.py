"""``python -m bench``: run the scenarios, print the table, write the report.

    python -m bench                      # everything, full size, 3 repeats
    python -m bench --quick              # smaller sizes, 1 repeat
    python -m bench --scenarios 1,3 --databases mariadb --repeat 5
    python -m bench --baseline old.json  # adds a "before" column (e.g. before an engine change)
    python -m bench --scenarios 1,peers  # feedwatch next to other task queues (docs/benchmarks.md, Peers)

Results go to ``bench/results/`` (``report.md``, ``benchmarks.png``,
``results.json``, ``profiles/``); the previous ``results.json`` is kept as
``previous.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import autoscaling, dblimit, failover, fanout, operator_scale, profiling, scale
from bench.figures import Figure, Target, fmt, percentile
from bench.harness import (
    DATABASES,
    DEFAULTS,
    LABELS,
    ROOT,
    TUNED,
    CpuMeter,
    Database,
    WatcherConfig,
    watcher_env,
    workdir,
)
from bench.peers import runner as peer_runner
from bench.peers import scenario as peers
from bench.report import Report

SCENARIOS = {
    "1": "fan-out/fan-in, no-op processor",
    "2": "HTTP processor vs bare client",
    "3": "database limit",
    "4": "failover",
    "5": "scale",
    "6": "autoscaler: backlog query, operator connections",
    "7": "operator: 200 FeedWatchers created at once",
    "peers": "the same fan-out/fan-in on other task queues",
}


@dataclass(frozen=True)
class Size:
    name: str
    s1: fanout.Workload
    enqueue_batch: int
    s3_seconds: float
    s4: tuple[int, int, float, float]  # partitions, items, processor delay, settle seconds
    s5_watchers: tuple[int, ...]
    s5_idle: tuple[int, int]
    backlog: int
    backlog_seconds: float
    repeat: int
    failover: WatcherConfig
    failover_defaults: bool = False


FAILOVER = WatcherConfig(
    concurrency=16,
    batch_size=500,
    poll_interval=0.2,
    commit_interval=0.005,
    lease_duration=5,
    grace_period=10,
    label="failover (lease 5 s, poll 0.2 s)",
)
FAILOVER_TINY = WatcherConfig(
    concurrency=16,
    batch_size=500,
    poll_interval=0.1,
    commit_interval=0.005,
    lease_duration=2,
    grace_period=5,
    label="failover (lease 2 s, poll 0.1 s)",
)

SIZES = {
    "tiny": Size(
        "tiny",
        fanout.Workload(3, 5),
        200,
        0.05,
        (4, 100, 0.05, 0.3),
        (1, 2),
        (100, 1000),
        200,
        3.0,
        1,
        FAILOVER_TINY,
    ),
    "quick": Size(
        "quick",
        fanout.Workload(20, 50),
        5000,
        0.5,
        (20, 100, 0.05, 1.0),
        (1, 2, 4),
        (1000, 10_000),
        10_000,
        5.0,
        1,
        FAILOVER,
    ),
    "full": Size(
        "full",
        fanout.Workload(100, 100),
        20_000,
        2.0,
        (40, 100, 0.05, 2.0),
        (1, 2, 4),
        (1000, 100_000),
        100_000,
        15.0,
        3,
        FAILOVER,
        failover_defaults=True,
    ),
}

# Targets of issue 6 on this 2-core machine.
THROUGHPUT_TARGET = {"sqlite": 20_000, "mariadb": 20_000, "postgresql": 10_000}


@dataclass
class Context:
    args: argparse.Namespace
    size: Size
    repeat: int
    results: Path
    work: Path
    report: Report
    tuned: WatcherConfig
    histories: list[bool]
    s1_rates: dict[str, list[float]] = field(default_factory=dict)

    def attempt(self, scenario: str, db: Database, what: str, **kwargs: Any) -> fanout.Run | None:
        """``fanout.run(db, work, **kwargs)``, or None if the engine got stuck (recorded; repeats go on)."""
        try:
            return fanout.run(db, self.work, **kwargs)
        except fanout.StuckError as error:
            first, _, detail = str(error).partition("\n")
            self.report.stuck.append((f"S{scenario} {db.label} {what}", first, detail))
            print(f"  {what}: STUCK - {first}", flush=True)
            return None

    def figure(
        self,
        scenario: str,
        db: Database,
        variant: str,
        metric: str,
        unit: str,
        *,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        return self.report.figure(scenario, db.label, variant, metric, unit, target=target, note=note)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description="feedwatch benchmarks (issue 6)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, one repeat (same as --size quick)")
    p.add_argument("--size", choices=sorted(SIZES), default=None, help="workload sizes (default full)")
    p.add_argument(
        "--scenarios",
        default=None,
        help="comma-separated: 1,...,7,peers (default all; at --size tiny all but peers)",
    )
    p.add_argument(
        "--peers",
        default=None,
        help=f"comma-separated peers of the peers scenario (default all: {','.join(peer_runner.PEERS)})",
    )
    p.add_argument(
        "--peer-timeout",
        type=float,
        default=peers.TIMEOUT,
        help=f"seconds one peer run may take before it is killed (default {peers.TIMEOUT:g})",
    )
    p.add_argument(
        "--databases", default=",".join(DATABASES), help="comma-separated: sqlite,mariadb,postgresql"
    )
    p.add_argument("--repeat", type=int, default=None, help="runs per figure (default 3; quick/tiny 1)")
    p.add_argument(
        "--history",
        choices=["on", "off", "both"],
        default="both",
        help="feed history setting of the scenario 1 runs (default both)",
    )
    p.add_argument("--no-defaults", action="store_true", help="skip the runs at default watcher settings")
    p.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one extra scenario 1 run per database with py-spy and SQL counters (default on at full size)",
    )
    p.add_argument("--concurrency", type=int, help="override the tuned concurrency")
    p.add_argument("--batch-size", type=int, help="override the tuned batch size")
    p.add_argument("--poll-interval", type=float, help="override the tuned poll interval")
    p.add_argument("--commit-interval", type=float, help="override the tuned commit interval")
    p.add_argument("--results", type=Path, default=ROOT / "bench" / "results", help="output folder")
    p.add_argument("--baseline", type=Path, help="a results.json to compare with (a 'before' column)")
    p.add_argument(
        "--engine-rev",
        help="run everything on the engine at this git revision (a snapshot of operator/, "
        "handled by bench/__main__.py), e.g. before and after a change; default: this checkout",
    )
    p.add_argument("--keep-workdir", action="store_true", help="keep watcher logs and the SQLite file")
    return p.parse_args(argv)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    # SIGTERM and SIGINT (even when a background shell ignores it) stop the run
    # through the cleanup path: watchers stopped, feeds deleted, report written.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    args = parse_args(argv)
    size = SIZES[args.size or ("quick" if args.quick else "full")]
    repeat = args.repeat or size.repeat
    default = [s for s in SCENARIOS if s != "peers" or size.name != "tiny"]
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()] if args.scenarios else default
    unknown = set(scenarios) - set(SCENARIOS)
    if args.peers:
        unknown |= {p.strip() for p in args.peers.split(",")} - set(peer_runner.PEERS)
    names = [d.strip() for d in args.databases.split(",") if d.strip()]
    if unknown or set(names) - set(DATABASES):
        print(
            f"unknown scenario or database: {sorted(unknown | (set(names) - set(DATABASES)))}",
            file=sys.stderr,
        )
        return 2
    profile = args.profile if args.profile is not None else size.name == "full"
    tuned = WatcherConfig(
        concurrency=args.concurrency or TUNED.concurrency,
        batch_size=args.batch_size or TUNED.batch_size,
        poll_interval=args.poll_interval or TUNED.poll_interval,
        commit_interval=args.commit_interval or TUNED.commit_interval,
        lease_duration=TUNED.lease_duration,
        label="tuned",
    )
    histories = {"on": [True], "off": [False], "both": [True, False]}[args.history]
    results = args.results
    results.mkdir(parents=True, exist_ok=True)
    if (results / "results.json").exists():
        shutil.copy(results / "results.json", results / "previous.json")
    started = time.monotonic()
    with workdir(keep=args.keep_workdir) as work:
        import feedwatch

        print(f"feedwatch imported from {Path(feedwatch.__file__).parent}")
        databases = []
        for name in names:
            try:
                databases.append(Database(name, work))
            except Exception as error:
                print(
                    f"{LABELS[name]} is not reachable ({error}); start it with `hack/databases up`",
                    file=sys.stderr,
                )
                return 1
        report = Report(
            size=size.name,
            repeat=repeat,
            tuned=tuned,
            defaults=DEFAULTS,
            failover=size.failover,
            databases=databases,
            scenarios=scenarios,
        )
        if args.baseline:
            report.load_baseline(args.baseline)
        ctx = Context(args, size, repeat, results, work, report, tuned, histories)
        print(report.header())
        try:
            for db in databases:
                for scenario in scenarios:
                    run_scenario(ctx, scenario, db)
                if profile:
                    run_profile(ctx, db)
                db.cleanup()
        except KeyboardInterrupt:
            print("interrupted: writing what was measured", file=sys.stderr)
        finally:
            for db in databases:
                db.cleanup()
                db.close()
        report.elapsed = time.monotonic() - started
        report.finish()
        print()
        print(report.table())
        paths = report.write(results)
        print()
        for path in paths:
            print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return 0 if not report.errors else 1


def _scale_here(db: Database, databases: list[Database]) -> bool:
    """The watcher-count curve runs on MariaDB (or the first database when MariaDB is not selected)."""
    names = [d.name for d in databases]
    return db.name == "mariadb" or ("mariadb" not in names and db is databases[0])


def run_scenario(ctx: Context, scenario: str, db: Database) -> None:
    print(f"\n== scenario {scenario} ({SCENARIOS[scenario]}) on {db.label}", flush=True)
    try:
        scenarios = {"1": scenario_1, "2": scenario_2, "3": scenario_3, "4": scenario_4, "5": scenario_5}
        more = {"6": autoscaling.scenario_6, "7": operator_scale.scenario, "peers": peers.scenario}
        {**scenarios, **more}[scenario](ctx, db)
    except Exception as error:
        message = f"scenario {scenario} on {db.label} failed: {type(error).__name__}: {error}"
        print("  " + message, file=sys.stderr)
        if not isinstance(error, RuntimeError | TimeoutError):
            traceback.print_exc()
        ctx.report.errors.append(message)
    finally:
        db.cleanup()


# -- scenario 1 -----------------------------------------------------------------------


def producer_batch(ctx: Context, db: Database) -> None:
    """The producer API: one Feed.enqueue call of many items into one partition."""
    n = ctx.size.enqueue_batch
    fig = ctx.figure(
        "1", db, f"one enqueue call of {n:,} items", "enqueue rate", "items/s", target=Target(">=", 50_000)
    )
    payload = [(f"i{j}", {"n": j}) for j in range(n)]
    for history in ctx.histories:
        if history is not True and len(ctx.histories) > 1:
            continue  # one history setting is enough for this figure: history writes one row per call
        for _ in range(ctx.repeat):
            feed = db.new_feed("enqueue", history=history)
            started = time.perf_counter()
            feed.enqueue("p0", payload)
            fig.values.append(n / (time.perf_counter() - started))
            db.drop_feed(feed.name)
    print(f"  producer: {fmt(fig.median)} items/s in one call of {n:,} items", flush=True)


def scenario_1(ctx: Context, db: Database) -> None:
    producer_batch(ctx, db)
    workload = ctx.size.s1
    configs = [ctx.tuned] + ([] if ctx.args.no_defaults else [DEFAULTS])
    for config in configs:
        for history in ctx.histories:
            variant = f"{config.label}, history {'on' if history else 'off'}"
            target = Target(">=", THROUGHPUT_TARGET[db.name]) if config is ctx.tuned else None
            rate = ctx.figure("1", db, variant, "item-gates/s", "item-gates/s", target=target)
            enq = ctx.figure("1", db, variant, "enqueue rate, 100-item calls", "items/s")
            fin_med = fin_p99 = None
            if history:
                fin_med = ctx.figure(
                    "1",
                    db,
                    variant,
                    "fan-in latency median",
                    "s",
                    target=Target("<=", 0.2) if config is ctx.tuned else None,
                )
                fin_p99 = ctx.figure(
                    "1",
                    db,
                    variant,
                    "fan-in latency p99",
                    "s",
                    target=Target("<=", 1.0) if config is ctx.tuned else None,
                )
            runs = []
            for n in range(ctx.repeat):
                run = ctx.attempt(
                    "1", db, f"{variant} #{n + 1}", workload=workload, config=config, history=history
                )
                if run is None:
                    continue
                runs.append(run)
                rate.values.append(run.rate)
                enq.values.append(run.enqueue_items_per_s)
                if fin_med is not None and fin_p99 is not None and run.fanin:
                    fin_med.values.append(run.fanin_median)
                    fin_p99.values.append(run.fanin_p99)
                extra = (
                    f", fan-in median {run.fanin_median:.3f} s p99 {run.fanin_p99:.3f} s"
                    f" (result -> gate advanced {percentile(run.fanin_decide, 0.5):.3f} s,"
                    f" -> next claim {percentile(run.fanin_claim, 0.5):.3f} s)"
                    if run.fanin
                    else ""
                )
                print(
                    f"  {variant} #{n + 1}: {fmt(run.rate)} item-gates/s ({run.wall:.2f} s){extra}"
                    f"{'; ' + '; '.join(run.notes) if run.notes else ''}",
                    flush=True,
                )
            if config is ctx.tuned and history:
                ctx.s1_rates[db.name] = rate.values
            ctx.report.cpu("1", db.label, variant, [r.cpu for r in runs], [r.item_gates for r in runs])
            ctx.report.rss("1", db.label, variant, [max(r.rss_peak_mb) for r in runs])


# -- scenario 2 -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_handler(ctx: Context, gates: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.handler", "--port", str(port)],
        env=watcher_env({"BENCH_GATES": str(gates)}),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(ctx.work / "handler.log", "ab"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}/"
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=1):  # noqa: S310 - loopback
                return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the benchmark handler did not start") from None
            time.sleep(0.1)


def bare_client(
    ctx: Context,
    url: str,
    *,
    items: int,
    clients: int,
    concurrency: int,
    gates: int,
    handler: Any,
    db: Database,
) -> tuple[float, dict[str, float]]:
    """Requests per second of ``clients`` bare-client processes sharing ``items`` items."""
    per = -(-items // clients)
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.bareclient",
                "--url",
                url,
                "--items",
                str(per),
                "--gates",
                str(gates),
                "--concurrency",
                str(concurrency),
                "--partition",
                f"p{n}",
            ],
            env=watcher_env(),
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(clients)
    ]
    meter = CpuMeter({"handler": [handler]}, None)
    meter.start()
    outs = [p.communicate(timeout=600) for p in procs]
    meter.stop()
    results = []
    for proc, (out, err) in zip(procs, outs, strict=True):
        if proc.returncode != 0:
            raise RuntimeError(f"bare client failed: {err.decode()[-2000:]}")
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    cpu = meter.result()
    cpu["bare clients"] = sum(r["cpu"] for r in results)  # their own count: they have exited
    cpu["other (not ours)"] = max(cpu["other (not ours)"] - cpu["bare clients"], 0.0)
    return sum(r["requests"] for r in results) / wall, cpu


def scenario_2(ctx: Context, db: Database) -> None:
    import psutil

    workload = ctx.size.s1
    config = ctx.tuned
    handler, url = start_handler(ctx, workload.gates)
    try:
        hp = psutil.Process(handler.pid)
        variant = f"{config.label}, history on"
        fw = ctx.figure("2", db, variant, "item-gates/s through HTTP", "item-gates/s")
        bare = ctx.figure(
            "2",
            db,
            f"bare aiohttp client, {2} processes x concurrency {config.concurrency}",
            "requests/s, no database",
            "requests/s",
        )
        ratio = ctx.figure(
            "2", db, variant, "feedwatch / bare client", "ratio", target=Target(">=", 0.7, ">= 0.70")
        )
        runs = []
        bare_cpu = []
        for n in range(ctx.repeat):
            run = ctx.attempt(
                "2", db, f"{variant} #{n + 1}", workload=workload, config=config, history=True,
                handler=url, extra_cpu={"handler": [hp]},
            )  # fmt: skip
            if run is None:
                continue
            runs.append(run)
            rate, cpu = bare_client(
                ctx,
                url,
                items=workload.partitions * workload.items,
                clients=2,
                concurrency=config.concurrency or 16,
                gates=workload.gates,
                handler=hp,
                db=db,
            )
            bare_cpu.append(cpu)
            fw.values.append(run.rate)
            bare.values.append(rate)
            ratio.values.append(run.rate / rate)
            print(
                f"  #{n + 1}: feedwatch {fmt(run.rate)} item-gates/s, bare client {fmt(rate)} requests/s, "
                f"ratio {run.rate / rate:.2f}",
                flush=True,
            )
        ctx.report.cpu(
            "2", db.label, variant + " (feedwatch)", [r.cpu for r in runs], [r.item_gates for r in runs]
        )
        ctx.report.cpu("2", db.label, "bare client", bare_cpu, [workload.item_gates] * len(bare_cpu))
    finally:
        handler.send_signal(signal.SIGTERM)
        try:
            handler.wait(10)
        except subprocess.TimeoutExpired:
            handler.kill()


# -- scenario 3 -----------------------------------------------------------------------


def scenario_3(ctx: Context, db: Database) -> None:
    measured: dict[str, list[dblimit.Shape]] = {}
    for _ in range(ctx.repeat):
        for shape in dblimit.measure(db, ctx.size.s3_seconds):
            measured.setdefault(shape.name, []).append(shape)
    rows = []
    for name, shapes in measured.items():
        fig = Figure("3", db.label, name, shapes[0].kind, shapes[0].unit, [s.rate for s in shapes])
        rows.append(fig)
    ctx.report.db_limits[db.label] = rows
    updates = [f for f in rows if f.metric == "update"]
    best = max(updates, key=lambda f: f.median)
    limit = ctx.figure("3", db, f"fastest: {best.variant}", "multi-row UPDATE, 500 rows", "rows/s")
    limit.values = list(best.values)
    select = next(f for f in rows if f.metric == "select")
    sel = ctx.figure("3", db, select.variant, "indexed SELECT", "rows/s")
    sel.values = list(select.values)
    for f in rows:
        print(f"  {f.variant}: {fmt(f.median)} {f.unit}", flush=True)
    ctx.report.limit_best[db.label] = (best.variant, best.median, select.median)


# -- scenario 4 -----------------------------------------------------------------------


def scenario_4(ctx: Context, db: Database) -> None:
    partitions, items, delay, settle = ctx.size.s4
    configs = [ctx.size.failover]
    if ctx.size.failover_defaults and not ctx.args.no_defaults:
        configs.append(WatcherConfig(grace_period=10, label="defaults (lease 30 s, poll 1 s)"))
    for config in configs:
        lease = config.lease_duration or 30.0
        poll = config.poll_interval or 1.0
        repeat = ctx.repeat if config is ctx.size.failover else 1
        for sig, target in ((signal.SIGKILL, lease + poll), (signal.SIGTERM, poll + 0.5)):
            name = signal.Signals(sig).name
            first = ctx.figure("4", db, config.label, f"{name}: first partition resumed", "s")
            last = ctx.figure(
                "4",
                db,
                config.label,
                f"{name}: all its partitions resumed",
                "s",
                target=Target("<=", target, f"<= {target:g} s"),
            )
            for n in range(repeat):
                result = failover.run(
                    db,
                    ctx.work,
                    config,
                    sig=sig,
                    partitions=partitions,
                    items=items,
                    delay=delay,
                    settle=settle,
                )
                if result.held:
                    first.values.append(result.first)
                    last.values.append(result.last)
                drained = (
                    f", victim exited after {result.drained:.2f} s" if result.drained is not None else ""
                )
                print(
                    f"  {config.label} {name} #{n + 1}: {result.held} partitions, resumed after "
                    f"{result.first:.2f} s (first) .. {result.last:.2f} s (all){drained}"
                    f"{'; ' + '; '.join(result.notes) if result.notes else ''}",
                    flush=True,
                )


# -- scenario 5 -----------------------------------------------------------------------


def scenario_5(ctx: Context, db: Database) -> None:
    size = ctx.size
    databases = ctx.report.databases
    if _scale_here(db, databases):
        for count in size.s5_watchers:
            fig = ctx.figure(
                "5",
                db,
                f"{count} watcher{'s' if count > 1 else ''}, tuned, history on",
                "item-gates/s",
                "item-gates/s",
            )
            runs = []
            for n in range(ctx.repeat):
                run = ctx.attempt(
                    "5", db, f"{fig.variant} #{n + 1}", workload=size.s1, config=ctx.tuned, history=True,
                    watchers=count,
                )  # fmt: skip
                if run is None:
                    continue
                runs.append(run)
                fig.values.append(run.rate)
            ctx.report.scale_curve[count] = fig.values
            ctx.report.cpu("5", db.label, fig.variant, [r.cpu for r in runs], [r.item_gates for r in runs])
            print(f"  {count} watcher(s): {fmt(fig.median)} item-gates/s", flush=True)
        curve = ctx.report.scale_curve
        if 1 in curve and 2 in curve:
            grow = ctx.figure("5", db, "2 watchers / 1 watcher", "throughput ratio", "x",
                              target=Target(">", 1.0, "> 1 (grows)"))  # fmt: skip
            grow.values = [statistics.median(curve[2]) / statistics.median(curve[1])]
    small, large = size.s5_idle
    cycle_medians = []
    for idle in (small, large):
        fig = ctx.figure("5", db, f"{idle:,} idle partitions", "lease cycle", "ms")
        feed = scale.cycle_feed(db, idle)
        cycles = [scale.lease_cycle(db, feed, idle) for _ in range(ctx.repeat)]
        fig.values = [c.total_ms for c in cycles]
        ctx.report.lease_cycles.setdefault(db.label, []).append(cycles[len(cycles) // 2])
        cycle_medians.append(fig.median)
        db.cleanup()
        print(
            f"  lease cycle with {idle:,} idle partitions: {fmt(fig.median)} ms "
            f"({', '.join(f'{k} {v:.1f}' for k, v in cycles[0].parts_ms.items())})",
            flush=True,
        )
    ratio = ctx.figure("5", db, f"{large:,} vs {small:,} idle partitions", "lease cycle ratio", "x",
                       target=Target("<=", 1.5, "<= 1.5 (independent)"))  # fmt: skip
    ratio.values = [cycle_medians[1] / cycle_medians[0]]
    for idle in (0, large):
        fig = ctx.figure(
            "5",
            db,
            f"scenario 1 with {idle:,} idle partitions present",
            "peak RSS per watcher",
            "MB",
            target=Target("<=", 150) if idle else None,
        )
        run = ctx.attempt(
            "5", db, fig.variant, workload=size.s1, config=ctx.tuned, history=True,
            prepare=functools.partial(scale.add_idle, db, idle=idle),
        )  # fmt: skip
        if run is None:
            continue
        fig.values = [max(run.rss_peak_mb)]
        db.cleanup()
        print(
            f"  {idle:,} idle partitions: peak RSS {', '.join(f'{m:.0f}' for m in run.rss_peak_mb)} MB, "
            f"{fmt(run.rate)} item-gates/s",
            flush=True,
        )
    backlog = scale.backlog_memory(db, ctx.work, ctx.tuned, size.backlog, size.backlog_seconds)
    fig = ctx.figure(
        "5",
        db,
        f"{size.backlog:,} one-item partitions due at once",
        "peak RSS per watcher",
        "MB",
        target=Target("<=", 150),
    )
    fig.values = [max(backlog.rss_peak_mb)]
    rate = ctx.figure(
        "5", db, f"{size.backlog:,} one-item partitions due at once", "partitions completed/s", "partitions/s"
    )
    rate.values = [backlog.partitions_per_s]
    print(
        f"  backlog of {size.backlog:,} one-item partitions: peak RSS "
        f"{', '.join(f'{m:.0f}' for m in backlog.rss_peak_mb)} MB, {backlog.leases_held} leases held, "
        f"{fmt(backlog.partitions_per_s)} partitions/s",
        flush=True,
    )


# -- profiling ------------------------------------------------------------------------


def run_profile(ctx: Context, db: Database) -> None:
    print(
        f"\n== profile of scenario 1 on {db.label} (py-spy on one watcher, SQL counters on both)", flush=True
    )
    out = ctx.results / "profiles"
    out.mkdir(exist_ok=True)
    path = out / f"{db.name}-pyspy.txt"
    spy = shutil.which("py-spy") is not None
    try:
        run = fanout.run(
            db, ctx.work, ctx.size.s1, ctx.tuned, history=True, profile=path if spy else None, counts=True
        )
        if not spy:
            summary = "(py-spy is not installed: `pip install py-spy`; SQL counters only)"
        else:
            summary = profiling.summarize(path) if path.exists() else "(py-spy wrote nothing)"
        ctx.report.profiles[db.label] = (run, summary)
        (out / f"{db.name}-summary.txt").write_text(summary + "\n")
        (out / f"{db.name}-sql-counts.json").write_text(json.dumps(run.counts, indent=1))
        print(f"  {fmt(run.rate)} item-gates/s under the profiler; summary in {out}", flush=True)
    except Exception as error:
        message = f"profile on {db.label} failed: {type(error).__name__}: {error}"
        print("  " + message, file=sys.stderr)
        ctx.report.errors.append(message)


if __name__ == "__main__":
    sys.exit(main())
