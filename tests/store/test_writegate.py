"""SQLite's write gate: feedwatch's writers queue on a lock file, across threads and processes."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from feedwatch.store import Store
from feedwatch.store.writegate import WriteGate

# Holds the gate of the file named by argv[1] until stdin closes; prints "held" once it has it.
HOLDER = """
import sys
from feedwatch.store.writegate import WriteGate
with WriteGate.for_file(sys.argv[1]).held():
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_writer_of_another_process_waits_until_the_gate_is_let_go(tmp_path: Path) -> None:
    database = str(tmp_path / "feed.db")
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, database], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        gate = WriteGate.for_file(database)
        assert gate is not None
        entered = threading.Event()

        def write() -> None:
            with gate.held():
                entered.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not entered.wait(0.3), "the gate let a second writer in while the other process held it"
        let_go = time.monotonic()
        assert holder.stdin is not None
        holder.stdin.close()
        assert entered.wait(10), "the gate was never handed on"
        print(f"handed on {time.monotonic() - let_go:.4f} s after the holder let go")
        writer.join()


def test_threads_of_one_process_take_turns_and_one_thread_may_nest(tmp_path: Path) -> None:
    gate = WriteGate.for_file(str(tmp_path / "feed.db"))
    assert gate is not None and gate is WriteGate.for_file(str(tmp_path / "." / "feed.db"))
    inside = 0
    most = 0
    count = threading.Lock()

    def write() -> None:
        nonlocal inside, most
        for _ in range(50):
            with gate.held(), gate.held():  # nested: the same thread does not wait for itself
                with count:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.0005)
                with count:
                    inside -= 1

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert most == 1, f"{most} writers were inside the gate at once"


def test_a_sqlite_store_queues_its_writes_and_reads_without_the_gate(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path / 'feed.db'}", check=False)
    try:
        assert store.write_gate is WriteGate.for_file(str(tmp_path / "feed.db"))
        entered = threading.Event()
        assert store.write_gate is not None
        with store.write_gate.held():
            # A read does not wait for the gate; a write (another thread) does.
            assert store.transaction(lambda c: 1, readonly=True) == 1
            writer = threading.Thread(target=lambda: store.transaction(lambda c: entered.set()))
            writer.start()
            assert not entered.wait(0.3), "a write transaction ran while another writer held the gate"
        assert entered.wait(10)
        writer.join()
        assert (tmp_path / "feed.db-writers").exists()
    finally:
        store.close()


def test_in_memory_databases_have_no_gate_and_an_unopenable_lock_file_leaves_sqlite_in_charge(
    tmp_path: Path,
) -> None:
    assert WriteGate.for_file(":memory:") is None and WriteGate.for_file("") is None
    (tmp_path / "feed.db-writers").mkdir()  # what a read-only folder does too: the file cannot be opened
    gate = WriteGate.for_file(str(tmp_path / "feed.db"))
    assert gate is not None
    with gate.held():  # no error: the gate orders this process's threads, SQLite the rest
        pass
    store = Store.open(f"sqlite:///{tmp_path / 'feed.db'}", check=False)
    try:
        store.transaction(lambda c: c.exec_driver_sql("CREATE TABLE t (x INTEGER)"))
    finally:
        store.close()
