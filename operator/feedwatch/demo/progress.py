"""What the demo shows while it runs: a live table on a terminal, plain lines otherwise.

Both displays get the same two things: events (one line each: leases, gates,
failures, the fix, the re-drive) and snapshots of every posting (items done
per gate, current gate, owner), several times a second.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Protocol, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class PostingState:
    """One posting as last read from the database."""

    id: str
    status: str
    gate: int
    owner: str
    resumes: int
    classified: int
    failed: int
    ranked: bool

    def line(self) -> str:
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.id:<28} {self.status:<9} gate {self.gate}  "
            f"resumes classified {self.classified:>4}/{self.resumes}{failed}  "
            f"rank {'1' if self.ranked else '0'}/1  owner {self.owner}"
        )


class Display(Protocol):
    def start(self) -> None: ...

    def event(self, text: str) -> None: ...

    def update(self, states: list[PostingState], watchers: list[str], done: int) -> None: ...

    def stop(self) -> None: ...

    def print(self, text: str = "", *, style: str | None = None) -> None: ...


class Clock:
    """Seconds since the work was enqueued (since creation until then)."""

    def __init__(self) -> None:
        self.origin = time.monotonic()

    def reset(self) -> None:
        self.origin = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.origin


class PlainDisplay:
    """For pipes and logs: an event per line; each posting's progress at most once a second."""

    def __init__(self, clock: Clock, out: TextIO | None = None, interval: float = 1.0) -> None:
        self.clock, self.out, self.interval = clock, out or sys.stdout, interval
        self._last: dict[str, PostingState] = {}
        self._printed = 0.0

    def start(self) -> None:
        pass

    def print(self, text: str = "", *, style: str | None = None) -> None:
        print(text, file=self.out, flush=True)

    def event(self, text: str) -> None:
        self.print(f"[{self.clock.elapsed():6.2f}s] {text}")

    def update(self, states: list[PostingState], watchers: list[str], done: int) -> None:
        now = time.monotonic()
        if now - self._printed < self.interval:
            return
        self._printed = now
        for state in states:
            if self._last.get(state.id) != state:
                self._last[state.id] = state
                self.print(f"[{self.clock.elapsed():6.2f}s] progress {state.line()}")

    def stop(self) -> None:
        pass


class RichDisplay:
    """For a terminal: a live table of the postings, events scrolling above it."""

    def __init__(self, clock: Clock, console: Console | None = None) -> None:
        self.clock = clock
        self.console = console or Console()
        self.live = Live(console=self.console, auto_refresh=False, transient=False)
        self._last: tuple[list[PostingState], list[str], int] = ([], [], 0)

    def start(self) -> None:
        self.live.start()

    def print(self, text: str = "", *, style: str | None = None) -> None:
        self.console.print(Text(text, style=style or ""), soft_wrap=True)

    def event(self, text: str) -> None:
        line = Text(f"{self.clock.elapsed():6.2f}s ", style="dim")
        style = "bold red" if "FAILED" in text or "failed" in text else None
        if text.startswith(("deploy", "re-driv", "rolling")) or "recovered" in text:
            style = "bold yellow"
        line.append(text, style=style or "")
        self.live.console.print(line, soft_wrap=True)

    def update(self, states: list[PostingState], watchers: list[str], done: int) -> None:
        self._last = (states, watchers, done)
        self.live.update(self._render(), refresh=True)

    def _render(self) -> Group:
        states, watchers, done = self._last
        table = Table(title="feedwatch demo: screening job applications", title_justify="left")
        for column in (
            "posting",
            "status",
            "gate",
            "gate 0: resumes classified",
            "done",
            "gate 1: rank",
            "owner",
        ):
            table.add_column(column)
        for s in states:
            status = {"failed": "[bold red]FAILED[/]", "complete": "[green]complete[/]"}.get(
                s.status, s.status
            )
            failed = f" [red]{s.failed} failed[/]" if s.failed else ""
            table.add_row(
                s.id, status, str(s.gate),
                ProgressBar(total=s.resumes, completed=s.classified, width=30),
                f"{s.classified}/{s.resumes}{failed}",
                "[green]done[/]" if s.ranked else ("waiting" if s.gate == 0 else "running"),
                s.owner,
            )  # fmt: skip
        loads = Counter(s.owner for s in states if s.owner != "-")
        elapsed = self.clock.elapsed()
        rate = done / elapsed if elapsed > 0 else 0.0
        footer = Text(
            f"watchers alive: {', '.join(watchers) or '-'}   partitions owned: "
            + (", ".join(f"{w} {n}" for w, n in sorted(loads.items())) or "none")
            + f"   {done} items done in {elapsed:.1f} s ({rate:.0f} items/s)",
            style="dim",
        )
        return Group(table, footer)

    def stop(self) -> None:
        self.live.stop()


def make_display(clock: Clock) -> Display:
    """Rich on a terminal, plain lines otherwise."""
    if sys.stdout.isatty():
        return RichDisplay(clock)
    return PlainDisplay(clock)
