"""Where a watcher's CPU goes: summaries of py-spy's collapsed stacks.

``py-spy record --format raw --threads`` writes one line per distinct stack:
``thread;frame;frame;... count``, each frame ``function (file:line)``. Idle
threads (waiting on a lock, a socket or the event loop's selector) are not
sampled, so the counts are CPU samples.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")

# Frames that name a phase of the engine, from the outermost a stack can hold.
ENGINE_PHASES = {
    "Dispatcher.call": "engine: processor call tasks",
    "Dispatcher.round": "engine: dispatcher rounds",
    "Dispatcher.claim": "engine: dispatcher rounds",
    "Dispatcher.committer": "engine: committer loop",
    "LeaseKeeper.run": "engine: lease keeper",
}


def _store_methods() -> set[str]:
    from feedwatch.store import Store

    return {n for n in dir(Store) if not n.startswith("_") and callable(getattr(Store, n))} - {
        "transaction",
        "write_rows",
        "read_token",
    }


def _phase(shorts: list[tuple[str, str]], methods: set[str]) -> str:
    """The outermost frame that names a store method or an engine loop."""
    for func, file in shorts:
        if file.startswith("feedwatch/store/"):
            name = func.split(".<locals>")[0].rsplit(".", 1)[-1]
            if name in methods:
                return f"store: {name}"
        if func in ENGINE_PHASES:
            return ENGINE_PHASES[func]
    return "other (event loop, tasks)"


def _short(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame, ""
    path = m.group("file")
    for marker in ("site-packages/", "feedwatch/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "feedwatch/":
                path = "feedwatch/" + path
            break
    return m.group("func"), path


def load(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


# Innermost frames of a thread that waits rather than works (py-spy cannot
# always tell from the OS thread state): left out of the CPU summary.
IDLE = {
    ("_worker", "concurrent/futures/thread.py"),
    ("EpollSelector.select", "selectors.py"),
    ("Condition.wait", "threading.py"),
    ("Event.wait", "threading.py"),
    ("Thread.join", "threading.py"),
    ("_wait_for_tstate_lock", "threading.py"),
    ("SocketIO.readinto", "socket.py"),  # PyMySQL waiting for the server's answer
    ("Connection.wait", "psycopg/connection.py"),  # psycopg polling for the server's answer
}


def summarize(path: Path, top: int = 18) -> str:
    """A text summary: samples per thread, per engine phase, top functions inclusive and self."""
    stacks = [(frames, count) for frames, count in load(path) if not frames or _short(frames[-1]) not in IDLE]
    idle = sum(c for _, c in load(path)) - sum(c for _, c in stacks)
    total = sum(c for _, c in stacks)
    if not total:
        return f"(no samples in {path.name})"
    methods = _store_methods()
    threads: Counter[str] = Counter()
    phases: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    for frames, count in stacks:
        thread = frames[0]
        body = frames[1:] if thread.startswith(("thread", "process")) or "0x" in thread else frames
        name = (
            "event loop (main)"
            if "MainThread" in thread or "main" in thread.lower()
            else ("database threads" if "feedwatch-db" in thread else re.sub(r"\s*\(.*\)", "", thread))
        )
        threads[name] += count
        shorts = [_short(f) for f in body]
        seen: set[str] = set()
        for func, file in shorts:
            key = f"{func} ({file})"
            if key not in seen:
                inclusive[key] += count
                seen.add(key)
        if shorts:
            func, file = shorts[-1]
            own[f"{func} ({file})"] += count
            layers[_layer(file)] += count
        phases[_phase(shorts, methods)] += count

    def pct(n: int) -> str:
        return f"{100 * n / total:5.1f}%"

    out = [
        f"{total} CPU samples of one watcher ({path.name}; {idle} samples of waiting threads left out)",
        "",
        "by thread:",
    ]
    out += [f"  {pct(n)}  {k}" for k, n in threads.most_common()]
    out += ["", "by engine phase (outermost feedwatch frame):"]
    out += [f"  {pct(n)}  {k}" for k, n in phases.most_common()]
    out += ["", "self time by layer (innermost frame's package):"]
    out += [f"  {pct(n)}  {k}" for k, n in layers.most_common(10)]
    out += ["", f"top {top} functions, inclusive (thread and event-loop plumbing left out):"]
    shown = [(k, n) for k, n in inclusive.most_common() if not _plumbing(k)][:top]
    out += [f"  {pct(n)}  {k}" for k, n in shown]
    out += ["", f"top {top} functions, self:"]
    out += [f"  {pct(n)}  {k}" for k, n in own.most_common(top)]
    return "\n".join(out)


_PLUMBING_FILES = (
    "(threading.py)",
    "(<frozen runpy>)",
    "(asyncio/runners.py)",
    "(concurrent/futures/thread.py)",
    "(feedwatch/__main__.py)",
    "(feedwatch/cli.py)",
    "(bench/counting.py)",
)
_PLUMBING_FUNCS = (
    "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete",
    "BaseEventLoop._run_once",
    "Handle._run",
)


def _plumbing(key: str) -> bool:
    return key.endswith(_PLUMBING_FILES) or key.startswith(_PLUMBING_FUNCS)


def _layer(file: str) -> str:
    if file.startswith("feedwatch/"):
        return "feedwatch"
    for name in (
        "sqlalchemy",
        "pymysql",
        "psycopg",
        "aiohttp",
        "asyncio",
        "sqlite3",
        "prometheus_client",
        "concurrent",
        "threading",
        "logging",
        "json",
        "uuid",
        "datetime",
    ):
        if file.startswith(name) or f"/{name}" in file:
            return name
    return file.split("/", maxsplit=1)[0] or "?"
