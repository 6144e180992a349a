"""``feedwatch watch`` with SQL counters: ``python -m bench.counting watch ...``.

Diagnostics only (``python -m bench --profile``): SQLAlchemy event listeners
count, per store method, the transactions, the statements and the rows they
touched, and write the totals as JSON to ``$BENCH_COUNTS_FILE`` at exit. The
engine is not changed; the listeners cost a few microseconds a statement.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
from collections import defaultdict
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine


def _store_methods() -> set[str]:
    """Every public method of the store: a statement is counted under the one that ran it."""
    from feedwatch.store import Store

    return {name for name in dir(Store) if not name.startswith("_") and callable(getattr(Store, name))}


METHODS = _store_methods() - {"transaction", "write_rows", "read_token", "open", "from_engine", "close"}

_lock = threading.Lock()
_counts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))


def _method() -> str:
    """The outermost store method on the stack: the call the engine made (helpers run inside it)."""
    frame = sys._getframe(2)
    found = "other"
    while frame is not None:
        code = frame.f_code
        if "feedwatch" in code.co_filename:
            if code.co_name in METHODS:
                found = code.co_name
            elif found == "other":
                found = f"other ({code.co_name})"
        frame = frame.f_back  # type: ignore[assignment]
    return found


def _verb(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "?"
    return word if word in ("SELECT", "UPDATE", "INSERT", "DELETE") else "other"


@event.listens_for(Engine, "after_cursor_execute")
def _after(  # noqa: PLR0917 - SQLAlchemy calls event listeners positionally
    conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    method = _method()
    verb = _verb(statement)
    rows = 0
    if verb in ("UPDATE", "DELETE"):
        rows = max(cursor.rowcount or 0, 0)
    elif verb == "INSERT":
        counted = cursor.rowcount if cursor.rowcount is not None else -1
        rows = counted if counted >= 0 else (len(parameters) if executemany else 1)
    elif verb == "SELECT":
        rows = 0
    with _lock:
        c = _counts[method]
        c["statements"] += len(parameters) if executemany and verb != "INSERT" else 1
        c[f"{verb} statements"] += 1
        c[f"{verb} rows"] += rows


@event.listens_for(Engine, "commit")
def _commit(conn: Any) -> None:
    with _lock:
        _counts[_method()]["transactions"] += 1


def _dump() -> None:
    path = os.environ.get("BENCH_COUNTS_FILE")
    if path:
        with _lock, open(path, "w") as f:
            json.dump({k: dict(v) for k, v in _counts.items()}, f)


def main() -> int:
    atexit.register(_dump)
    from feedwatch.cli import main as feedwatch_main

    try:
        return feedwatch_main(sys.argv[1:])
    finally:
        _dump()


if __name__ == "__main__":
    sys.exit(main())
