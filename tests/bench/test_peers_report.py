"""The peers scenario's measurement and report formatting (no peer runs: ``make bench`` runs them)."""

from __future__ import annotations

import math

from bench.peers.runner import Outcome, measure
from bench.report import peers_markdown, peers_text


def _log() -> list[str]:
    # Two partitions of two items and their fan-in tasks; one line that is not a record.
    return [
        "i 0 100.0 100.5",
        "i 0 100.1 101.0",
        "i 1 100.2 100.4",
        "i 1 100.3 100.6",
        "f 1 100.9 101.0",
        "f 0 101.5 102.0",
        "garbage",
    ]


def test_measure_counts_tasks_over_the_whole_workload_and_fanin_from_the_last_item() -> None:
    outcome = measure(_log(), Outcome("huey", "sqlite", True, "s"))
    assert outcome.tasks == 6
    assert math.isclose(outcome.wall, 2.0)
    assert math.isclose(outcome.rate, 3.0)
    assert sorted(round(x, 6) for x in outcome.latencies) == [0.3, 0.5]
    assert math.isclose(outcome.fanin_median, 0.4)


def test_report_divides_feedwatch_by_the_best_peer_of_each_shape_and_shows_failures() -> None:
    fast = measure(_log(), Outcome("chancy", "postgresql", True, "AsyncExecutor, eager polling"))
    slow = Outcome("dbos", "postgresql", True, "polling 50 ms", tasks=100, wall=10.0)
    jobs = Outcome("pgqueuer", "postgresql", False, "batch 100", tasks=1000, wall=1.0)
    stuck = Outcome("celery", "postgresql", True, "chords", error="timed out after 400 s")
    peers = {"PostgreSQL": ((30.0, 0.25), [fast, slow, jobs, stuck])}

    md = "\n".join(peers_markdown(peers))
    assert "### PostgreSQL" in md
    assert "30.0 item-gates/s, fan-in median 0.250 s" in md
    assert "| chancy | fan-out/fan-in | 3.00 tasks/s | 0.400 s | 10.0x | AsyncExecutor, eager polling |" in md
    assert "| dbos | fan-out/fan-in | 10.0 tasks/s |" in md
    assert "| pgqueuer | independent jobs, no fan-in | 1,000 tasks/s | - | 0.0x | batch 100 |" in md
    assert "| celery | fan-out/fan-in | failed: timed out after 400 s |" in md
    assert "feedwatch / best fan-in peer (dbos): **3.0x**" in md
    assert "feedwatch / best independent-jobs peer (pgqueuer): **0.0x**" in md

    text = "\n".join(peers_text(peers))
    assert "chancy (fan-out/fan-in): 3.00 tasks/s, fan-in median 0.400 s, feedwatch / chancy 10.0x" in text
    assert "celery (fan-out/fan-in): failed: timed out after 400 s" in text
    assert "pgqueuer (independent jobs, no fan-in): 1,000 tasks/s, feedwatch / pgqueuer 0.0x" in text


def test_report_without_a_feedwatch_figure_says_so_and_prints_no_ratio() -> None:
    jobs = Outcome("procrastinate", "postgresql", False, "concurrency 10", tasks=500, wall=2.0)
    md = "\n".join(peers_markdown({"PostgreSQL": (None, [jobs])}))
    assert "feedwatch: no figure" in md
    assert "**" not in md
    assert "| procrastinate | independent jobs, no fan-in | 250 tasks/s | - |  |" in md
