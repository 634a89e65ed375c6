"""A process forked from one that used statefile (multiprocessing's default on Linux,
gunicorn's workers) uses its own lock queues, helper threads and journal handles, never
its parent's copies (crates/statefile/src/process.rs).

Each fork is made two ways: `os.fork()`, which runs the package's `os.register_at_fork`
hook, and libc's `fork()` called directly, which runs no Python hook, so that the
library has only the process id to tell the child by.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import statefile
from conftest import wait_child


def _libc_fork() -> int:
    # PyDLL: called with the GIL held, so that the child starts holding it (no Python
    # thread of this test runs meanwhile).
    fork: Callable[[], int] = ctypes.PyDLL(None).fork
    pid = fork()
    if pid < 0:
        raise OSError(ctypes.get_errno(), "fork")
    return pid


FORKS = [pytest.param(os.fork, id="os.fork"), pytest.param(_libc_fork, id="libc-fork")]


def _in_child(fork: Callable[[], int], body: Callable[[], None]) -> int:
    """Run `body` in a forked child; its pid. The child exits 0 if `body` returned, 1
    with the error printed if it raised."""
    pid = fork()
    if pid == 0:
        code = 1
        try:
            body()
            code = 0
        except BaseException as e:  # noqa: BLE001 - reported through the exit code
            print(f"child: {type(e).__name__}: {e}", flush=True)
        finally:
            os._exit(code)
    return pid


@pytest.mark.parametrize("fork", FORKS)
def test_a_journal_written_by_a_parent_and_its_forked_child_at_once_stays_whole(
    tmp_path: Path, fork: Callable[[], int]
) -> None:
    # Regression: the child used its parent's journal handle, whose descriptors share
    # their open file descriptions, and so their flock locks, with the parent's: both
    # "held" the journal's locks at once, appended records at the same position, and
    # the journal was damaged ("the record does not follow its predecessor"; 512 of
    # 4,002 records readable, every later write refused; seen in 5 runs of 5 here).
    statefile.enable_journal(tmp_path)
    for name in ("a.json", "b.json"):
        statefile.Doc(tmp_path / name).write({"n": -1})
    shared = statefile.Doc(tmp_path / "shared.json")
    shared.write({"items": []})
    n, m = 600, 100

    def writes(name: str) -> None:
        # Each its own document first (appends to the journal at the same time, which
        # only its locks keep apart), then one document both update.
        d = statefile.Doc(tmp_path / name)
        for i in range(n):
            d.write({"n": i, "pad": "x" * 200})
        for i in range(m):
            item = f"{name}-{i}"
            shared.update(lambda v: v["items"].append(item))

    pid = _in_child(fork, lambda: writes("b.json"))
    writes("a.json")
    assert wait_child(pid, 120) == 0, "the child's writes failed (its output above)"
    st = statefile.journal_status(tmp_path)
    assert st is not None
    assert st["damage"] is None, st["damage"]
    assert not st["needs_repair"]
    # 2 + 1 documents made, then 2 x n writes and 2 x m updates.
    assert st["records"] == 3 + 2 * n + 2 * m, st
    assert statefile.Doc(tmp_path / "a.json").read()["n"] == n - 1
    assert statefile.Doc(tmp_path / "b.json").read()["n"] == n - 1
    items = shared.read()["items"]
    assert sorted(items) == sorted(f"{d}-{i}" for d in ("a.json", "b.json") for i in range(m))


@pytest.mark.parametrize("fork", FORKS)
def test_a_child_forked_while_a_parent_thread_holds_a_lock_takes_it_once_let_go(
    tmp_path: Path, fork: Callable[[], int]
) -> None:
    # Regression: the child's copy of the lock's in-process queue said "held" by the
    # parent's thread, which the child does not have, and no release ever reached it:
    # its write of that document waited out its whole lock timeout (LockTimeout) though
    # the parent had let go long before.
    p = tmp_path / "a.json"
    doc = statefile.Doc(p)
    doc.write({"n": 0})
    inside = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with doc.update() as v:
            v["n"] = 1
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    assert inside.wait(10)
    def child() -> None:
        start = time.monotonic()
        statefile.Doc(p, lock_timeout=8).update(lambda v: v.update(child=True))
        took = time.monotonic() - start
        if took > 4:
            raise AssertionError(f"the child's update took {took:.1f} s (the lock was let go at 0.3 s)")

    # The holder waits in release.wait, the GIL released; the fork holds it.
    pid = _in_child(fork, child)
    time.sleep(0.3)
    release.set()
    t.join()
    code = wait_child(pid, 30)
    assert code == 0, "the child could not take the lock its parent let go (output above)"
    assert doc.read() == {"n": 1, "child": True}


@pytest.mark.parametrize("fork", FORKS)
def test_a_forked_child_reads_and_writes_a_journal_its_parent_keeps_open(
    tmp_path: Path, fork: Callable[[], int]
) -> None:
    # The child opens the journal itself: a transaction there, and the parent's
    # transaction after it, both land, and the journal stays whole.
    statefile.enable_journal(tmp_path)
    store = statefile.Store(tmp_path)

    def make(tx: statefile.Transaction) -> None:
        tx.write("q.json", [1, 2])
        tx.write("d.json", [])

    store.transaction(make)

    def move(tx: statefile.Transaction) -> None:
        q = tx.read("q.json")
        d = tx.read("d.json")
        d.append(q.pop(0))
        tx.write("q.json", q)
        tx.write("d.json", d)

    def child() -> None:
        statefile.Store(tmp_path).transaction(move)

    assert wait_child(_in_child(fork, child), 60) == 0
    store.transaction(move)
    assert statefile.Doc(tmp_path / "q.json").read() == []
    assert statefile.Doc(tmp_path / "d.json").read() == [1, 2]
    st = statefile.journal_status(tmp_path)
    assert st is not None and st["damage"] is None and not st["needs_repair"]
