"""Running ``feedwatch demo`` and the examples as processes, and reading what they left behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from feedwatch import Feed, Store
from feedwatch.testing import check_invariants

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def clean_env() -> dict[str, str]:
    """This environment without FEEDWATCH_* variables, so only the arguments decide."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEEDWATCH_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class DemoRun:
    args: list[str]
    returncode: int
    output: str

    def lines(self, pattern: str) -> list[str]:
        return [line for line in self.output.splitlines() if re.search(pattern, line)]

    @property
    def feed(self) -> str:
        match = re.search(r"^feed: (\S+)", self.output, re.MULTILINE)
        assert match, f"the demo did not say its feed:\n{self.output}"
        return match.group(1)

    @property
    def status_command(self) -> list[str]:
        """The first ``feedwatch status --db ... --feed ...`` command the demo printed."""
        match = re.search(r"^  (feedwatch status --db (\S+) --feed (\S+))$", self.output, re.MULTILINE)
        assert match, f"the demo printed no status command:\n{self.output}"
        return match.group(1).split()

    @property
    def database(self) -> str:
        return self.status_command[3]

    @property
    def workdir(self) -> Path | None:
        match = re.search(r"remove it with: rm -r (\S+)$", self.output, re.MULTILINE)
        return Path(match.group(1)) if match else None


def run_demo(*args: str, timeout: float = 240) -> DemoRun:
    """``python -m feedwatch demo ARGS`` with stdout on a pipe (so: plain lines)."""
    cmd = [sys.executable, "-m", "feedwatch", "demo", *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(), check=False,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    run = DemoRun(list(args), proc.returncode, proc.stdout + proc.stderr)
    assert proc.returncode == 0, f"feedwatch demo {' '.join(args)} exited {proc.returncode}:\n{run.output}"
    return run


@dataclass
class PostingFacts:
    """What the database says about one posting after the demo."""

    id: str
    status: str
    resumes: int
    resumes_complete: int
    rank_complete: bool
    last_resume_completed: int  # history pk
    first_rank_dispatch: int  # history pk
    last_resume_completed_at: object
    first_rank_dispatch_at: object
    events: list[tuple[str, int | None, str | None, str | None]]  # event, item pk, owner, message
    rank_result: dict[str, object]


def posting_facts(store: Store, feed_name: str) -> dict[str, PostingFacts]:
    import json

    feed = Feed(store, feed_name)
    facts = {}
    for part in feed.partitions():
        items = list(feed.iter_items(part.id))
        resumes = [i for i in items if i.id != "rank"]
        (rank,) = [i for i in items if i.id == "rank"]
        resume_pks = {i.pk for i in resumes}
        history = feed.history(part.id)
        completed = [h for h in history if h.item_pk in resume_pks and h.event == "complete"]
        dispatched = [h for h in history if h.item_pk == rank.pk and h.event == "dispatched"]
        assert completed, f"{part.id}: no resume completion in the history"
        assert dispatched, f"{part.id}: no dispatch of the rank item in the history"
        facts[part.id] = PostingFacts(
            id=part.id,
            status=part.status,
            resumes=len(resumes),
            resumes_complete=sum(1 for i in resumes if i.status == "complete" and i.gate == 0),
            rank_complete=rank.status == "complete" and rank.gate == 1,
            last_resume_completed=max(h.pk for h in completed),
            first_rank_dispatch=min(h.pk for h in dispatched),
            last_resume_completed_at=max(h.at for h in completed),
            first_rank_dispatch_at=min(h.at for h in dispatched),
            events=[(h.event, h.item_pk, h.owner, h.message) for h in history],
            rank_result=json.loads(rank.data or b"{}"),
        )
    return facts


def assert_fan_in_after_fan_out(
    store: Store, feed_name: str, postings: int, resumes: int
) -> dict[str, PostingFacts]:
    """Every posting complete; its rank step dispatched only after every resume completed."""
    facts = posting_facts(store, feed_name)
    assert len(facts) == postings
    for f in facts.values():
        assert f.status == "complete", f"{f.id} is {f.status}"
        assert f.resumes == resumes, f
        assert f.resumes_complete == resumes, f
        assert f.rank_complete, f"{f.id}: the rank item is not complete at gate 1"
        assert f.last_resume_completed < f.first_rank_dispatch, (
            f"{f.id}: the rank step was dispatched (history #{f.first_rank_dispatch}) before the "
            f"last resume completed (history #{f.last_resume_completed})"
        )
        assert f.last_resume_completed_at <= f.first_rank_dispatch_at  # type: ignore[operator]
        assert len(f.rank_result["top"]) == min(10, resumes)  # type: ignore[arg-type]
        assert f.rank_result["considered"] == resumes
    assert check_invariants(store, feed_name) == []
    return facts


def assert_failed_and_recovered(facts: PostingFacts) -> None:
    """The failing posting: an item failed for good, the posting failed, re-driven, recovered."""
    names = [e[0] for e in facts.events]
    failures = [e for e in facts.events if e[0] in ("fail", "failed") and e[1] is not None]
    assert failures, f"{facts.id}: no item failed: {names}"
    assert "classifier v1 cannot read the experience line" in (failures[0][3] or "")
    poison = failures[0][1]
    order = [
        names.index("partition_failed"),
        names.index("redriven"),
        max(i for i, e in enumerate(facts.events) if e[0] == "complete" and e[1] == poison),
        names.index("partition_completed"),
    ]
    assert order == sorted(order), f"{facts.id}: expected fail, re-drive, complete; got {names}"
    top = facts.rank_result["top"]
    assert top[0]["name"] == "Grace Hopper", "the recovered resume is the strongest candidate"  # type: ignore[index]
