"""``feedwatch demo``: screen job applications, end to end, on a real database.

1. Create the database (a temporary SQLite file unless ``--db``), migrate it,
   create a fresh feed.
2. Start the watchers (in this process, or ``--watchers N`` processes).
3. Enqueue the postings: each a partition with its resumes at gate 0 and one
   ``rank`` item at gate 1. Resumes are classified (gate 0, fan-out); once no
   resume of a posting is left at gate 0, the partition advances to gate 1 and
   its rank step reads every result back and keeps the top 10 (fan-in).
4. One posting holds a resume classifier v1 cannot read: the item fails with a
   permanent error and the posting fails once its other resumes are done. The
   demo deploys the fix (classifier v2) and re-drives the posting, as
   ``feedwatch retry`` does; it recovers.
5. Print the top 10 of every posting, totals, and the commands to look at the
   same database.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from feedwatch.demo import handler as handler_api
from feedwatch.demo import screening
from feedwatch.demo.progress import Clock, Display, PostingState, make_display
from feedwatch.demo.watchers import DemoError, InProcessWatchers, ProcessWatchers, Watchers
from feedwatch.producer import Feed
from feedwatch.settings import FeedSettings
from feedwatch.store import HistoryRow, PartitionSummary, Store, migrate
from feedwatch.store.connection import redact

FEED = "resumes"
TICK = 0.25
#: Feed settings of the demo: quick retries, so a retryable hiccup does not stall it.
DEMO_FEED = FeedSettings(max_retries=3, backoff_base=0.2, backoff_cap=2.0, poll_delay=0.2)
LIMITS = {"watchers": (1, 16), "postings": (1, 60), "resumes": (1, 5000)}


class DemoUsageError(Exception):
    """The options cannot work together."""


@dataclass(frozen=True)
class Options:
    """The demo's options, as ``feedwatch demo`` takes them."""

    db: str | None = None
    watchers: int = 1
    handler: str | None = None
    postings: int = 4
    resumes: int = 250
    seed: int = 7

    def check(self) -> None:
        for name, (low, high) in LIMITS.items():
            value = getattr(self, name)
            if not low <= value <= high:
                raise DemoUsageError(f"--{name} must be between {low} and {high}, not {value}")
        if self.handler and not self.db:
            raise DemoUsageError(
                "--handler needs --db: the handler's rank step reads the classified resumes back "
                "from the same database. For example:\n"
                "  python examples/resume_handler.py --port 8000 --db sqlite:////tmp/demo.db &\n"
                "  feedwatch demo --handler http://127.0.0.1:8000/ --db sqlite:////tmp/demo.db"
            )


def run_demo(
    *,
    db: str | None = None,
    watchers: int = 1,
    handler: str | None = None,
    postings: int = 4,
    resumes: int = 250,
    seed: int = 7,
) -> int:
    """Run the demo; return the exit code (0 done, 1 failed, 2 bad options)."""
    options = Options(db, watchers, handler, postings, resumes, seed)
    clock = Clock()
    display = make_display(clock)
    try:
        options.check()
        return asyncio.run(Demo(options, display, clock).run())
    except DemoUsageError as problem:
        display.print(f"feedwatch demo: {problem}")
        return 2
    except (DemoError, handler_api.HandlerError) as error:
        display.print(f"feedwatch demo: FAILED: {error}")
        return 1
    except DBAPIError as error:
        display.print(f"feedwatch demo: FAILED: database error: {str(error).splitlines()[0]}")
        return 1


@dataclass
class Progress:
    """What the demo has seen and done so far."""

    history_after: dict[str, int] = field(default_factory=dict)
    failed_items: set[tuple[str, str]] = field(default_factory=set)
    retried: set[str] = field(default_factory=set)
    fix: asyncio.Task[None] | None = None
    fix_seconds: tuple[float, float] = (0.0, 0.0)
    states: dict[str, PostingState] = field(default_factory=dict)


class Demo:
    """One run of the demo: set up, enqueue, follow, fix, re-drive, report."""

    def __init__(self, options: Options, display: Display, clock: Clock) -> None:
        self.display, self.clock = display, clock
        self.watcher_count, self.handler = options.watchers, options.handler
        self.resumes, self.seed = options.resumes, options.seed
        self.postings = screening.postings(options.postings)
        self.failing = self.postings[screening.failing_posting(options.postings)].id
        self.workdir: Path | None = None
        db = options.db
        if db is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="feedwatch-demo-"))
            db = f"sqlite:///{self.workdir / 'demo.db'}"
        self.url = db
        self.shown_url = redact(db)
        self.progress = Progress()
        self.pks: dict[str, int] = {}
        self.finished = 0.0
        self.logs: Path | None = None

    # -- the story --------------------------------------------------------------------

    async def run(self) -> int:
        say = self.display.print
        say(
            f"feedwatch demo: {len(self.postings)} job postings x {self.resumes} resumes, "
            f"{self.watcher_count} watcher{'s' if self.watcher_count > 1 else ''}"
            + (f", handler {self.handler}" if self.handler else ", in-process processor")
        )
        say(f"database: {self.shown_url}")
        await asyncio.to_thread(migrate, self.url)
        self.store = await asyncio.to_thread(Store.open, self.url, pool_size=10)
        try:
            self.feed = await asyncio.to_thread(self._create_feed)
            say(f"feed: {self.feed.name} (schema by feedwatch.migrate, feed by Feed.create)")
            if self.handler:
                await self._prepare_handler(self.handler)
            pool = self._watchers()
            try:
                await pool.start(self.display.event)
                for line in pool.describe():
                    say(line)
                self.display.start()
                try:
                    await self._enqueue()
                    pool.join(self.display.event)
                    await self._follow(pool)
                finally:
                    self.display.stop()
            except DemoError:
                say(f"look at what happened: {self.command('status')}")
                raise
            finally:
                await pool.stop()
            await asyncio.to_thread(self._report, self.finished)
            if self.logs is not None:
                shutil.rmtree(self.logs, ignore_errors=True)
        finally:
            self.store.close()
        return 0

    def _create_feed(self) -> Feed:
        """``resumes`` in a fresh database; ``resumes-2``, ``-3``, ... when it is taken."""
        for n in range(1, 10_000):
            name = FEED if n == 1 else f"{FEED}-{n}"
            if self.store.save_feed(name, DEMO_FEED, now=self.store.now(), create_only=True):
                return Feed(self.store, name)
        raise DemoError("no free feed name resumes-N in this database")

    async def _prepare_handler(self, url: str) -> None:
        info = await asyncio.to_thread(handler_api.handler_info, url)
        theirs = info.get("database")
        if theirs != self.shown_url:
            raise DemoUsageError(
                f"the handler at {url} reads {theirs or 'no database'}, the demo writes "
                f"{self.shown_url}: start the handler with --db and the same URL"
            )
        await asyncio.to_thread(handler_api.deploy, url, "v1")
        self.display.print(f"handler {url}: deployed classifier v1 (POST /deploy)")

    def _watchers(self) -> Watchers:
        if self.watcher_count == 1:
            return InProcessWatchers(self.store, self.feed.name, self.handler)
        logs = self.workdir
        if logs is None:  # removed after a run that went well; kept to read if not
            logs = self.logs = Path(tempfile.mkdtemp(prefix="feedwatch-demo-logs-"))
        return ProcessWatchers(
            self.store, url=self.url, feed=self.feed.name, count=self.watcher_count,
            handler=self.handler, logs=logs,
        )  # fmt: skip

    async def _enqueue(self) -> None:
        batches = [
            (p, screening.generate(p, self.resumes, self.seed, with_poison=p.id == self.failing))
            for p in self.postings
        ]
        self.clock.reset()
        for posting, items in batches:
            await asyncio.to_thread(self.feed.enqueue, posting.id, items, gate=0)
            result = await asyncio.to_thread(
                self.feed.enqueue, posting.id, screening.rank_item(posting), gate=1
            )
            self.pks[posting.id] = result.partition_pk
        self.display.event(
            f"enqueued {len(self.postings)} postings (partitions), each with {self.resumes} "
            f"resumes at gate 0 and one '{screening.RANK_ITEM}' item at gate 1"
        )

    async def _follow(self, pool: Watchers) -> None:
        """Watch the postings until all are complete: report, deploy the fix, re-drive."""
        deadline = time.monotonic() + 120 + len(self.postings) * self.resumes / 20
        while True:
            pool.check()
            watchers, rows = await asyncio.to_thread(self._read)
            states: list[PostingState] = []
            for posting, summary, history in rows:
                state = self._state(posting, summary, pool)
                states.append(state)
                self._events(posting, history, pool)
                await self._failures(state, summary, pool)
            self.progress.states = {s.id: s for s in states}
            done = sum(s.classified + (1 if s.ranked else 0) for s in states)
            self.display.update(states, [pool.label(w) for w in watchers], done)
            if all(s.status == "complete" for s in states):
                self.finished = self.clock.elapsed()
                return
            if self.progress.fix is not None and self.progress.fix.done():
                self.progress.fix.result()  # raises what the deployment raised
            if time.monotonic() > deadline:
                raise DemoError("the demo did not finish in time; see `feedwatch status` below")
            await asyncio.sleep(TICK)

    def _read(self) -> tuple[list[str], list[tuple[str, PartitionSummary, list[HistoryRow]]]]:
        """The live watchers; each posting's counts and its history rows not seen yet."""
        watchers = self.store.live_watchers(self.feed.name, self.store.now())
        out = []
        for posting in self.postings:
            summary = self.feed.status(posting.id)
            after = self.progress.history_after.get(posting.id, 0)
            history = self.store.history(self.pks[posting.id], after=after)
            if history:
                self.progress.history_after[posting.id] = history[-1].pk
            out.append((posting.id, summary, history))
        return watchers, out

    def _state(self, posting: str, summary: PartitionSummary, pool: Watchers) -> PostingState:
        counts = summary.counts
        return PostingState(
            id=posting,
            status=summary.partition.status,
            gate=summary.partition.gate,
            owner=pool.label(summary.partition.owner),
            resumes=self.resumes,
            classified=counts.get(("complete", 0), 0),
            failed=counts.get(("failed", 0), 0),
            ranked=counts.get(("complete", 1), 0) == 1,
        )

    def _events(self, posting: str, history: list[HistoryRow], pool: Watchers) -> None:
        say = self.display.event
        for row in history:
            if row.item_pk is not None:
                continue
            who = pool.label(row.owner)
            if row.event == "lease_acquired":
                say(f"{posting}: leased by {who}")
            elif row.event == "lease_taken":
                say(f"{posting}: {who} took it over ({row.message})")
            elif row.event == "lease_handed_off":
                giver = pool.label((row.message or "").removeprefix("from "))
                say(f"{posting}: handed off {giver} -> {who} (balancing)")
            elif row.event == "lease_released":
                say(f"{posting}: released by {who}")
            elif row.event == "gate_advanced":
                say(f"{posting}: {row.message}: every resume is classified, the rank step runs (fan-in)")
            elif row.event == "partition_completed":
                recovered = (
                    " (recovered after the fix and the re-drive)" if posting in self.progress.retried else ""
                )
                say(f"{posting}: complete{recovered}")
            elif row.event == "partition_failed":
                say(f"{posting}: FAILED: {row.message}")

    async def _failures(self, state: PostingState, summary: PartitionSummary, pool: Watchers) -> None:
        posting = state.id
        for item, gate, error in summary.failed:
            if (posting, item) not in self.progress.failed_items:
                self.progress.failed_items.add((posting, item))
                self.display.event(
                    f"{posting}: item {item} failed at gate {gate}: {error} (a permanent error: "
                    "not retried; the posting fails once its other resumes are done)"
                )
                self._start_fix(pool)
        if state.status != "failed":
            return
        if posting in self.progress.retried:
            raise DemoError(f"posting {posting} failed again after the fix: {summary.partition.error}")
        fix = self._start_fix(pool)
        if not fix.done():
            return
        fix.result()
        count = await asyncio.to_thread(self.feed.retry, posting)
        self.progress.retried.add(posting)
        self.display.event(
            f"re-driving {posting}, as `{self.command('retry', posting)}` does (Feed.retry): "
            f"{count} failed item(s) reset, the posting is available again and resumes at gate 0"
        )

    def _start_fix(self, pool: Watchers) -> asyncio.Task[None]:
        """Deploy the fix once, in the background; the task that does it."""
        if self.progress.fix is None:
            self.display.event(
                "deploying the fix: classifier v2 also reads years of experience written in words"
            )
            self.progress.fix = asyncio.create_task(self._deploy(pool), name="demo:fix")
        return self.progress.fix

    async def _deploy(self, pool: Watchers) -> None:
        started = self.clock.elapsed()
        await pool.deploy_fix(self.display.event)
        self.progress.fix_seconds = (started, self.clock.elapsed())

    # -- the end ----------------------------------------------------------------------

    def command(self, verb: str, *args: str) -> str:
        parts = ["feedwatch", verb, "--db", self.shown_url, "--feed", self.feed.name, *args]
        return " ".join(shlex.quote(p) for p in parts)

    def _report(self, seconds: float) -> None:
        say = self.display.print
        say()
        total = 0
        for posting in self.postings:
            summary = self.feed.status(posting.id)
            total += sum(n for (status, _), n in summary.counts.items() if status == "complete")
            rank = self.feed.items(posting.id, gate=1)[0]
            result = json.loads(rank.data or b"{}")
            counts = result.get("classes", {})
            classes = ", ".join(f"{counts[c]} {c}" for c in ("strong", "maybe", "no") if c in counts)
            versions = ", ".join(f"{n} by {v}" for v, n in sorted(result.get("classified_by", {}).items()))
            say(f"top {screening.TOP} for {posting.id} ({posting.title}; requires "
                f"{', '.join(posting.requires)})", style="bold")  # fmt: skip
            say(f"  {result.get('considered')} resumes ranked: {classes}; classified {versions}")
            say(f"  {'#':>3} {'score':>5}  {'class':<6} {'years':>5}  {'name':<18} "
                f"{'resume':<12} skills")  # fmt: skip
            for n, c in enumerate(result.get("top", []), 1):
                say(f"  {n:>3} {c['score']:>5}  {c['class']:<6} {c['years']:>5}  {c['name']:<18} "
                    f"{c['resume']:<12} {', '.join(c['skills'])}")  # fmt: skip
            say()
        rate = total / seconds if seconds > 0 else 0.0
        start, end = self.progress.fix_seconds
        say(
            f"totals: {total} items complete ({len(self.postings) * self.resumes} resumes, "
            f"{len(self.postings)} rank steps; {len(self.progress.retried)} posting(s) re-driven) "
            f"in {seconds:.1f} s: {rate:.0f} items/s",
            style="bold",
        )
        if end - start > 1:
            say(f"  (deploying the fix took {end - start:.1f} s of it, {start:.1f}-{end:.1f} s)")
        say()
        say("look at the same database:")
        say(f"  {self.command('status')}")
        say(f"  {self.command('status', self.failing)}   # the posting that failed and recovered")
        say(f"  {self.command('items', self.postings[0].id, '--gate', '1')}   # its rank result")
        if self.shown_url != self.url:
            say("  (the password is hidden: use your --db URL, or set FEEDWATCH_DATABASE_URL)")
        if self.workdir is not None:
            where = shlex.quote(str(self.workdir))
            say(f"the database stays in {where}; remove it with: rm -r {where}")
