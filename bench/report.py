"""The printed table, ``report.md``, ``results.json`` and the plot."""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import machine
from bench.figures import Figure, Target, fmt
from bench.harness import Database, WatcherConfig


@dataclass
class CpuRow:
    scenario: str
    database: str
    variant: str
    cores: dict[str, float]  # group -> CPU seconds / wall seconds (median over runs)
    per_item_us: dict[str, float]  # group -> CPU microseconds per item-gate (median over runs)


@dataclass
class Report:
    size: str
    repeat: int
    tuned: WatcherConfig
    defaults: WatcherConfig
    failover: WatcherConfig
    databases: list[Database]
    scenarios: list[str]
    figures: list[Figure] = field(default_factory=list)
    cpu_rows: list[CpuRow] = field(default_factory=list)
    db_limits: dict[str, list[Figure]] = field(default_factory=dict)
    limit_best: dict[str, tuple[str, float, float]] = field(default_factory=dict)
    scale_curve: dict[int, list[float]] = field(default_factory=dict)
    lease_cycles: dict[str, list[Any]] = field(default_factory=dict)
    profiles: dict[str, tuple[Any, str]] = field(default_factory=dict)
    # database label -> (feedwatch's item-gates/s and fan-in median, or None; the peers' Outcomes)
    peers: dict[str, tuple[tuple[float, float] | None, list[Any]]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    stuck: list[tuple[str, str, str]] = field(default_factory=list)  # run, reason, diagnostics
    baseline: dict[tuple[str, str, str, str], float] = field(default_factory=dict)
    elapsed: float = 0.0
    started_at: str = field(default_factory=lambda: time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    machine: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.machine = machine.describe(self.databases)
        self.command = "python -m bench " + " ".join(sys.argv[1:])

    # -- collecting ---------------------------------------------------------------

    def figure(
        self,
        scenario: str,
        database: str,
        variant: str,
        metric: str,
        unit: str,
        *,
        target: Target | None = None,
        note: str = "",
    ) -> Figure:
        fig = Figure(scenario, database, variant, metric, unit, [], target, note)
        self.figures.append(fig)
        return fig

    def find(self, scenario: str, database: str, variant: str, metric: str) -> Figure | None:
        """The figure with values of that scenario, database, variant and metric, if measured."""
        return next(
            (
                f
                for f in self.figures
                if f.scenario == scenario
                and f.database == database
                and f.variant == variant
                and f.metric == metric
                and f.values
            ),
            None,
        )

    def cpu(
        self, scenario: str, database: str, variant: str, runs: list[dict[str, float]], item_gates: list[int]
    ) -> None:
        if not runs:
            return
        groups = [k for k in runs[0] if k != "wall"]
        cores = {g: statistics.median(r.get(g, 0.0) / r["wall"] for r in runs) for g in groups}
        per_item = {
            g: statistics.median(r.get(g, 0.0) / n * 1e6 for r, n in zip(runs, item_gates, strict=True))
            for g in groups
        }
        self.cpu_rows.append(CpuRow(scenario, database, variant, cores, per_item))

    def rss(self, scenario: str, database: str, variant: str, peaks: list[float]) -> None:
        fig = self.figure(scenario, database, variant, "peak RSS per watcher", "MB")
        fig.values = peaks

    def load_baseline(self, path: Path) -> None:
        data = json.loads(path.read_text())
        for f in data.get("figures", []):
            key = (f["scenario"], f["database"], f["variant"], f["metric"])
            self.baseline[key] = f["median"]

    def finish(self) -> None:
        self.machine["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    # -- text -------------------------------------------------------------------------

    def settings_lines(self) -> list[str]:
        return [
            f"size {self.size}, {self.repeat} run(s) per figure (median, spread = min-max)",
            f"tuned watchers: {self.tuned.describe()}",
            f"default watchers: {self.defaults.describe()}",
            f"failover watchers: {self.failover.describe()}",
            "scenario 1-3 and 5 use 2 watcher processes unless stated; history on and off as listed",
            *(
                ["peers: one run each on the scenario 1 workload, settings in the Peers section"]
                if "peers" in self.scenarios
                else []
            ),
        ]

    def header(self) -> str:
        lines = ["feedwatch benchmarks", ""]
        lines += [f"  {k:<22} {v}" for k, v in self.machine.items()]
        lines += [""] + [f"  {line}" for line in self.settings_lines()]
        return "\n".join(lines)

    def _rows(self) -> list[list[str]]:
        rows = []
        for f in self.figures:
            if not f.values:
                continue
            row = [
                f"S{f.scenario}" if f.scenario.isdigit() else f.scenario,
                f.database,
                f.variant,
                f.metric,
                f"{fmt(f.median)} {f.unit}",
                f.spread,
                str(len(f.values)),
                str(f.target or ""),
                f.verdict,
            ]
            if self.baseline:
                before = self.baseline.get((f.scenario, f.database, f.variant, f.metric))
                row.append(fmt(before) if before is not None else "")
            rows.append(row)
        return rows

    def _headers(self) -> list[str]:
        heads = ["", "database", "variant", "figure", "median", "spread", "n", "target", ""]
        return heads + (["before"] if self.baseline else [])

    def table(self) -> str:
        rows = self._rows()
        heads = self._headers()
        widths = [max(len(str(r[i])) for r in [heads, *rows]) for i in range(len(heads))]
        out = ["  ".join(h.ljust(w) for h, w in zip(heads, widths, strict=True)).rstrip()]
        out.append("  ".join("-" * w for w in widths))
        out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        if self.cpu_rows:
            out += ["", "CPU over the runs (cores used of 2, and CPU µs per item-gate; median of the runs):"]
            for r in self.cpu_rows:
                parts = [f"{g} {r.cores[g]:.2f} ({r.per_item_us[g]:,.0f} µs)" for g in r.cores]
                out.append(f"  S{r.scenario} {r.database}, {r.variant}: " + ", ".join(parts))
        if self.peers:
            out += ["", "Peers (the same workload on other task queues; one run each):"]
            out += ["  " + line for line in peers_text(self.peers)]
        if self.stuck:
            out += ["", f"{len(self.stuck)} run(s) never finished (engine stuck; see report.md):"]
            out += [f"  {what}: {reason}" for what, reason, _ in self.stuck]
        if self.errors:
            out += ["", "errors:"] + [f"  {e}" for e in self.errors]
        return "\n".join(out)

    # -- files --------------------------------------------------------------------------

    def write(self, folder: Path) -> list[Path]:
        paths = []
        plot = folder / "benchmarks.png"
        try:
            self.plot(plot)
            paths.append(plot)
        except Exception as error:
            self.errors.append(f"plot failed: {error}")
        md = folder / "report.md"
        md.write_text(self.markdown(plot.name if plot.exists() else None))
        paths.append(md)
        js = folder / "results.json"
        js.write_text(
            json.dumps(
                {
                    "machine": self.machine,
                    "settings": self.settings_lines(),
                    "command": self.command,
                    "started_at": self.started_at,
                    "elapsed_s": self.elapsed,
                    "figures": [f.as_dict() for f in self.figures if f.values],
                    "cpu": [r.__dict__ for r in self.cpu_rows],
                    "errors": self.errors,
                },
                indent=1,
                default=str,
            )
        )
        paths.append(js)
        return paths

    def markdown(self, plot: str | None) -> str:
        md: list[str] = ["# feedwatch benchmark results", ""]
        md += [f"`{self.command}`, started {self.started_at}, took {self.elapsed / 60:.1f} min.", ""]
        md += ["## Machine", "", "| | |", "|---|---|"]
        md += [f"| {k} | {v} |" for k, v in self.machine.items()]
        md += ["", "## Settings", ""] + [f"- {line}" for line in self.settings_lines()] + [""]
        md += ["## Figures", ""]
        heads = self._headers()
        md += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        md += ["| " + " | ".join(r) + " |" for r in self._rows()]
        verdicts = [f for f in self.figures if f.target and f.values]
        if verdicts:
            met = sum(1 for f in verdicts if f.verdict == "met")
            md += ["", f"Targets: {met} of {len(verdicts)} met."]
        if plot:
            md += ["", f"![benchmarks]({plot})"]
        if self.cpu_rows:
            md += [
                "",
                "## CPU per process",
                "",
                "Cores used over the run (CPU seconds / wall seconds; the machine has 2) and CPU "
                "microseconds per item-gate. `other` is CPU the machine spent on processes that are "
                "not part of the benchmark (noise).",
                "",
            ]
            groups: list[str] = []
            for r in self.cpu_rows:
                groups += [g for g in r.cores if g not in groups]
            md += [
                "| scenario | database | variant | " + " | ".join(groups) + " |",
                "|" + "---|" * (3 + len(groups)),
            ]
            for r in self.cpu_rows:
                cells = [
                    f"{r.cores[g]:.2f} cores, {r.per_item_us[g]:,.0f} µs" if g in r.cores else ""
                    for g in groups
                ]
                md.append(f"| S{r.scenario} | {r.database} | {r.variant} | " + " | ".join(cells) + " |")
            md += [
                "",
                "What two cores allow at the measured CPU cost (watchers + database server + "
                "handler, per item-gate), if nothing else ran:",
                "",
            ]
            for r in self.cpu_rows:
                cost = sum(v for g, v in r.per_item_us.items() if not g.startswith(("other", "bench")))
                if cost > 0:
                    md.append(
                        f"- S{r.scenario} {r.database}, {r.variant}: {cost:,.0f} µs per item-gate "
                        f"-> at most {fmt(2e6 / cost)} item-gates/s"
                    )
        if self.db_limits:
            md += ["", "## Scenario 3: the database's own limit next to feedwatch's rate", ""]
            for label, rows in self.db_limits.items():
                md += [
                    f"### {label}",
                    "",
                    "| shape (raw driver, one statement a transaction) | median | spread |",
                    "|---|---|---|",
                ]
                md += [f"| {f.variant} | {fmt(f.median)} {f.unit} | {f.spread} |" for f in rows]
                md.append("")
            md += self._next_to_limit()
        if self.lease_cycles:
            md += ["", "## Scenario 5: one lease cycle, by store call (median ms)", ""]
            for label, cycles in self.lease_cycles.items():
                calls = list(cycles[0].parts_ms)
                md += [
                    f"| {label}: idle partitions | total | " + " | ".join(calls) + " |",
                    "|" + "---|" * (2 + len(calls)),
                ]
                md += [
                    f"| {c.idle:,} | {c.total_ms:.1f} | "
                    + " | ".join(f"{c.parts_ms[k]:.1f}" for k in calls)
                    + " |"
                    for c in cycles
                ]
                md.append("")
        if self.profiles:
            md += ["", "## Profiles (scenario 1, tuned, history on)", ""]
            for label, (run, summary) in self.profiles.items():
                md += [f"### {label}: {fmt(run.rate)} item-gates/s under the profiler", ""]
                if run.counts:
                    md += self._counts_table(run)
                md += ["```", summary, "```", ""]
        if self.peers:
            md += ["", "## Peers", "", *peers_markdown(self.peers)]
        if self.stuck:
            md += ["", "## Runs that never finished", "",
                   f"{len(self.stuck)} run(s) stopped making progress (no item result for "
                   "30 s with every watcher alive) and were left out of the figures:", ""]  # fmt: skip
            for what, reason, detail in self.stuck:
                md += [f"- {what}: {reason}", "", "```", detail, "```", ""]
        if self.errors:
            md += ["", "## Errors", ""] + [f"- {e}" for e in self.errors]
        return "\n".join(md) + "\n"

    def _next_to_limit(self) -> list[str]:
        md = [
            "| database | fastest 500-row UPDATE | indexed SELECT | feedwatch (S1 tuned, history on) | "
            "feedwatch item rows updated/s (claim + result) | share of the UPDATE limit |",
            "|---|---|---|---|---|---|",
        ]
        for label, (shape, update, select) in self.limit_best.items():
            fw = self.find("1", label, "tuned, history on", "item-gates/s")
            if fw is None:
                md.append(
                    f"| {label} | {fmt(update)} rows/s | {fmt(select)} rows/s | (scenario 1 not run) | | |"
                )
                continue
            rows = 2 * fw.median
            md.append(
                f"| {label} | {fmt(update)} rows/s ({shape}) | {fmt(select)} rows/s | "
                f"{fmt(fw.median)} item-gates/s | {fmt(rows)} | {100 * rows / update:.0f}% |"
            )
        return md

    @staticmethod
    def _counts_table(run: Any) -> list[str]:
        n = run.item_gates
        md = [
            f"SQL per store method over the run, both watchers ({n:,} item-gates):",
            "",
            "| store method | transactions | per item-gate | statements | rows updated | rows inserted |",
            "|---|---|---|---|---|---|",
        ]
        items = sorted(run.counts.items(), key=lambda kv: -kv[1].get("transactions", 0))
        total_tx = sum(c.get("transactions", 0) for _, c in items)
        for method, c in items:
            tx = c.get("transactions", 0)
            if not tx and not c.get("statements"):
                continue
            md.append(
                f"| {method} | {tx:,.0f} | {tx / n:.3f} | {c.get('statements', 0):,.0f} | "
                f"{c.get('UPDATE rows', 0):,.0f} | {c.get('INSERT rows', 0):,.0f} |"
            )
        md += [f"| **all** | {total_tx:,.0f} | {total_tx / n:.3f} | | | |", ""]
        return md

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, 2, figsize=(13, 9))
        labels = [db.label for db in self.databases]

        # (a) scenario 1 throughput per database and variant
        ax = axes[0][0]
        variants = []
        for f in self.figures:
            if f.scenario == "1" and f.metric == "item-gates/s" and f.values and f.variant not in variants:
                variants.append(f.variant)
        width = 0.8 / max(len(variants), 1)
        for i, variant in enumerate(variants):
            values: list[float] = []
            errs: list[list[float]] = [[], []]
            for label in labels:
                g = self.find("1", label, variant, "item-gates/s")
                med = g.median if g else 0.0
                values.append(med)
                errs[0].append(med - min(g.values) if g else 0.0)
                errs[1].append(max(g.values) - med if g else 0.0)
            xs = [k + i * width for k in range(len(labels))]
            ax.bar(xs, values, width, yerr=errs, label=variant, capsize=3)
        for k, db in enumerate(self.databases):
            target = {"sqlite": 20_000, "mariadb": 20_000, "postgresql": 10_000}[db.name]
            ax.hlines(
                target,
                k - 0.1,
                k + 0.9 - 0.1,
                colors="red",
                linestyles="dashed",
                label="target" if k == 0 else None,
            )
        ax.set_xticks([k + 0.4 - width / 2 for k in range(len(labels))], labels)
        ax.set_yscale("log")
        ax.set_ylabel("item-gates/s (log)")
        ax.set_title("Scenario 1: fan-out/fan-in throughput, 2 watchers")
        ax.legend(fontsize=7)

        # (b) fan-in latency
        ax = axes[0][1]
        rows = [f for f in self.figures if f.scenario == "1" and f.metric.startswith("fan-in") and f.values]
        keys: list[tuple[str, str]] = []
        for f in rows:
            if (f.database, f.variant) not in keys:
                keys.append((f.database, f.variant))
        names = [f"{d}\n{v.replace(', history on', '')}" for d, v in keys]
        for metric, color in (("fan-in latency median", "tab:blue"), ("fan-in latency p99", "tab:orange")):
            ys = []
            for database, variant in keys:
                g = self.find("1", database, variant, metric)
                ys.append(g.median if g else 0.0)
            off = -0.2 if "median" in metric else 0.2
            ax.bar(
                [k + off for k in range(len(names))],
                ys,
                0.4,
                label=metric.replace("fan-in latency ", ""),
                color=color,
            )
        ax.axhline(0.2, color="tab:blue", linestyle="dashed", linewidth=1, label="median target")
        ax.axhline(1.0, color="tab:orange", linestyle="dashed", linewidth=1, label="p99 target")
        ax.set_xticks(range(len(names)), names, fontsize=7)
        ax.set_ylabel("seconds")
        ax.set_title("Scenario 1: fan-in latency per partition")
        ax.legend(fontsize=7)

        # (c) scale curve
        ax = axes[1][0]
        if self.scale_curve:
            counts = sorted(self.scale_curve)
            meds = [statistics.median(self.scale_curve[c]) for c in counts]
            ax.plot(counts, meds, marker="o")
            for c in counts:
                ax.scatter([c] * len(self.scale_curve[c]), self.scale_curve[c], color="grey", s=8)
            ax.set_xticks(counts)
        scale_db = next(
            (f.database for f in self.figures if f.scenario == "5" and f.metric == "item-gates/s"), ""
        )
        ax.set_xlabel("watcher processes")
        ax.set_ylabel("item-gates/s")
        ax.set_title(f"Scenario 5: throughput by watcher count {('(' + scale_db + ')') if scale_db else ''}")

        # (d) database limit vs feedwatch
        ax = axes[1][1]
        names = list(self.limit_best)
        if names:
            limit = [self.limit_best[n][1] for n in names]
            fw = []
            for n in names:
                g = self.find("1", n, "tuned, history on", "item-gates/s")
                fw.append(2 * g.median if g else 0.0)
            ax.bar([k - 0.2 for k in range(len(names))], limit, 0.4, label="fastest 500-row UPDATE (rows/s)")
            ax.bar([k + 0.2 for k in range(len(names))], fw, 0.4, label="feedwatch item rows updated/s")
            ax.set_xticks(range(len(names)), names)
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        ax.set_title("Scenario 3: the database's limit vs feedwatch")
        fig.suptitle(f"feedwatch benchmarks ({self.machine.get('CPU', '')})", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)


# -- peers ------------------------------------------------------------------------------


def _peer_cells(feedwatch: tuple[float, float] | None, o: Any) -> tuple[str, str, str, str]:
    """Shape, tasks/s, fan-in median and feedwatch / peer of one peer outcome."""
    shape = "fan-out/fan-in" if o.fanin else "independent jobs, no fan-in"
    if o.error:
        return shape, f"failed: {o.error}", "", ""
    fanin = f"{o.fanin_median:.3f} s" if o.fanin else "-"
    ratio = f"{feedwatch[0] / o.rate:.1f}x" if feedwatch and o.rate > 0 else ""
    return shape, f"{fmt(o.rate)} tasks/s", fanin, ratio


def _feedwatch_cells(feedwatch: tuple[float, float] | None) -> str:
    if feedwatch is None:
        return "feedwatch: no figure (its scenario 1 run failed)"
    return (
        f"feedwatch (tuned, history on): {fmt(feedwatch[0])} item-gates/s, fan-in median {feedwatch[1]:.3f} s"
    )


def peers_text(peers: Mapping[str, tuple[tuple[float, float] | None, list[Any]]]) -> list[str]:
    """The peers' lines of the printed table."""
    out = []
    for label, (feedwatch, outcomes) in peers.items():
        out.append(f"{label}: {_feedwatch_cells(feedwatch)}")
        for o in outcomes:
            shape, rate, fanin, ratio = _peer_cells(feedwatch, o)
            extra = (f", fan-in median {fanin}" if fanin and fanin != "-" else "") + (
                f", feedwatch / {o.peer} {ratio}" if ratio else ""
            )
            out.append(f"  {o.peer} ({shape}): {rate}{extra}")
    return out


def peers_markdown(peers: Mapping[str, tuple[tuple[float, float] | None, list[Any]]]) -> list[str]:
    """The report's Peers section: per database, feedwatch and every peer, with the settings used."""
    md = [
        "The scenario 1 workload (100 partitions x 100 items, a fan-in per partition) on other task "
        "queues, each on a fresh database of the same server (or a SQLite file on the same disk), one "
        "run each. Tasks/s counts processor calls over the whole workload (items and fan-in tasks; "
        "feedwatch's item-gates are its processor calls). Fan-in latency: a partition's last item "
        "finished -> its fan-in task started.",
        "",
    ]
    for label, (feedwatch, outcomes) in peers.items():
        md += [f"### {label}", "", _feedwatch_cells(feedwatch), ""]
        md += [
            "| peer | shape | tasks/s | fan-in median | feedwatch / peer | settings |",
            "|---|---|---|---|---|---|",
        ]
        for o in outcomes:
            shape, rate, fanin, ratio = _peer_cells(feedwatch, o)
            md.append(f"| {o.peer} | {shape} | {rate} | {fanin} | {ratio} | {o.settings} |")
        for fanin_shape, name in ((True, "fan-in peer"), (False, "independent-jobs peer")):
            done = [o for o in outcomes if o.fanin is fanin_shape and not o.error]
            if feedwatch and done:
                best = max(done, key=lambda o: o.rate)
                md.append("")
                md.append(f"feedwatch / best {name} ({best.peer}): **{feedwatch[0] / best.rate:.1f}x**")
        md.append("")
    return md
