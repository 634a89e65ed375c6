"""rev15 review of c9dde71 (the helper threads blocked in flock come from a per-process
pool, reset in a forked child): the fork cases, through the binding that is used under
fork (gunicorn, multiprocessing), and a process's exit with pool threads alive.

"Another process" holding a lock is another open file description of the lock file,
flock'ed here (the kernel treats it as it would another process's), or a real process.

Findings (failing at c9dde71; the first two fixed since, the last two by the library's
per-process state (crates/statefile/src/process.rs) and the package's fork hook):
- a helper that wins a lock with nobody waiting "releases" it by closing its descriptor;
  a child forked while it was blocked has a copy, so the lock stays held (every process
  times out) until that child exits (pre-existing);
- a forked child adopts the parent's helper from the document's slot and waits out its
  timeout for a thread it does not have, on every contended wait (pre-existing);
- the pool's fork check is getpid(): pid 1 in a nested pid namespace passes it;
- a child forked while another thread holds the pool's mutex (or the registry's) hangs
  in its first contended wait, past any deadline.

A passing test is evidence; a failing one is a finding.
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import statefile
from conftest import wait_child

CLONE_NEWPID = 0x20000000


def _lock_file(doc_path: Path) -> Path:
    return doc_path.parent / f".{doc_path.name}.lock"


def _hold(doc_path: Path) -> int:
    """Another open file description of the document's lock file, holding its flock."""
    fd = os.open(_lock_file(doc_path), os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _free(doc_path: Path) -> bool:
    """Whether another open file description gets the lock at once (and lets go)."""
    fd = os.open(_lock_file(doc_path), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)




def _write_while_held(doc_path: Path, value: Any, held: float, timeout: float) -> float:
    """Write `value` (lock timeout `timeout`) while another open file description holds
    the lock for `held` seconds: the seconds the write took (LockTimeout propagates)."""
    fd = _hold(doc_path)
    timer = threading.Timer(held, fcntl.flock, (fd, fcntl.LOCK_UN))
    timer.start()
    try:
        start = time.monotonic()
        statefile.Doc(doc_path, lock_timeout=timeout).write(value)
        return time.monotonic() - start
    finally:
        timer.join()
        os.close(fd)


def _give_up_while_held(doc_path: Path) -> int:
    """Hold the lock from another open file description and let a write give up on it:
    its helper stays blocked in flock (on a descriptor of its own). The holder's fd."""
    fd = _hold(doc_path)
    with pytest.raises(statefile.LockTimeout):
        statefile.Doc(doc_path, lock_timeout=0.05).write({"n": "gave up"})
    return fd


# ---------------------------------------------------------------------------------
# A child forked while a helper is blocked in flock.


def test_a_helper_that_wins_for_nobody_releases_the_lock_though_a_forked_child_has_its_descriptor(
    tmp_path: Path,
) -> None:
    # FINDING (pre-existing; the pool keeps the same release): a head gives up on a lock
    # another process holds and leaves its helper blocked in flock. The process forks a
    # worker (gunicorn, multiprocessing), which gets a copy of the helper's descriptor:
    # the same open file description. When the holder lets go, the helper wins with
    # nobody waiting and "releases at once" by closing its descriptor: but a flock
    # belongs to the open file description and lasts until its LAST descriptor closes.
    # The worker's copy keeps the lock held for the worker's whole life: every writer
    # of the document, in every process, times out. (An explicit unlock, LOCK_UN, as
    # LockGuard::drop does, would release it.)
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"n": 0})
    holder = _give_up_while_held(p)
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(30)  # a worker that never touches the document
        finally:
            os._exit(0)
    try:
        fcntl.flock(holder, fcntl.LOCK_UN)
        os.close(holder)
        time.sleep(0.5)  # the helper wins and closes its descriptor
        free = _free(p)
        try:
            statefile.Doc(p, lock_timeout=1).write({"n": 1})
            wrote = True
        except statefile.LockTimeout:
            wrote = False
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    # Once the worker is gone, its copy is closed and the lock is free: the cause.
    statefile.Doc(p, lock_timeout=5).write({"n": 2})
    assert free and wrote, (
        f"the lock stayed held after the holder let go (free={free}, write={wrote}): the "
        "helper that won it with nobody waiting closed its descriptor, but a child forked "
        "while it was blocked in flock has a copy of it"
    )


def test_a_child_forked_while_a_helper_is_blocked_does_not_wait_for_that_helper(
    tmp_path: Path,
) -> None:
    # FINDING (pre-existing; the pid reset of c9dde71 does not reach it): the document's
    # helper slot is copied into a forked child, naming a helper whose thread only the
    # parent has. A head in the child that finds the lock held ADOPTS it (helper_for
    # looks at the slot before helpers::run, where the pid is checked) and waits for an
    # outcome that never comes: LockTimeout after the full timeout though the lock was
    # free long before. Nothing in the child ever clears that slot, so every contended
    # wait on that document in that child does the same, for the child's whole life.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"n": 0})
    holder = _give_up_while_held(p)
    pid = os.fork()
    if pid == 0:
        code = 9
        try:
            code = 0
            try:  # the holder lets go 0.5 s from now (in the parent)
                statefile.Doc(p, lock_timeout=3).write({"n": "child 1"})
            except statefile.LockTimeout:
                code |= 1
            try:  # the child's own contended wait, a 0.1 s hold, later on
                _write_while_held(p, {"n": "child 2"}, held=0.1, timeout=2)
            except statefile.LockTimeout:
                code |= 2
        finally:
            os._exit(code)
    # The parent's own waiter adopts the (real) helper and gets the lock when the holder
    # lets go; it unlocks explicitly when done: the lock is free from then on.
    wrote: list[Any] = []
    w = threading.Thread(
        target=lambda: wrote.append(statefile.Doc(p, lock_timeout=10).write({"n": "parent"}))
    )
    w.start()
    time.sleep(0.5)
    fcntl.flock(holder, fcntl.LOCK_UN)
    w.join(20)
    os.close(holder)
    assert wrote, "the parent's waiter did not get the lock"
    code = wait_child(pid, 30)
    assert code == 0, (
        f"the forked child's waits timed out though the lock was free (exit {code}: "
        "1 = its first wait, 2 = a later one): it adopted the parent's helper, which has "
        "no thread in the child"
    )
    # Once the child is gone too (it now contends for real, and may hold the lock
    # while the parent looks), nobody holds it.
    assert _free(p), "the lock is held after both writes"


def test_a_worker_forked_after_contended_waits_waits_with_its_own_helpers(tmp_path: Path) -> None:
    # The pid reset: a fork pool (multiprocessing, gunicorn's pre-fork) created while the
    # parent keeps idle helper threads; each worker's contended waits start helpers of
    # its own and end when the holder lets go, and a grandchild's too.
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"n": 0})
    assert _write_while_held(p, {"n": 1}, held=0.2, timeout=5) >= 0.15
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(3) as pool:
        took = pool.map(_worker_waits, [(str(tmp_path), i) for i in range(6)])
    assert all(t < 2 for t in took), took
    # A child with its own kept helpers forks a grandchild.
    pid = os.fork()
    if pid == 0:
        code = 9
        try:
            _write_while_held(tmp_path / "w0.json", {"n": "child"}, held=0.1, timeout=3)
            gpid = os.fork()
            if gpid == 0:
                c = 9
                try:
                    t = _write_while_held(tmp_path / "w1.json", {"n": "g"}, held=0.1, timeout=3)
                    c = 0 if t < 2 else 8
                finally:
                    os._exit(c)
            code = wait_child(gpid, 20) or 0
        finally:
            os._exit(code)
    assert wait_child(pid, 30) == 0
    assert statefile.Doc(tmp_path / "w1.json").read() == {"n": "g"}


def _worker_waits(arg: tuple[str, int]) -> float:
    d, i = arg
    path = Path(d) / f"w{i}.json"
    statefile.Doc(path).write({"n": 0})
    return _write_while_held(path, {"n": i}, held=0.2, timeout=5) - 0.2


def test_a_process_in_a_nested_pid_namespace_with_its_parents_pid_starts_its_own_helper(
    tmp_path: Path,
) -> None:
    # The pool's fork check compares getpid() with the pid it recorded. A process forked
    # into a new pid namespace is pid 1 there; if its parent was pid 1 of its own
    # namespace (a container's init, a sandbox) and kept an idle helper thread, the
    # child's pool copy says "pid 1, one idle thread": the child queues its job to a
    # thread it does not have and waits out its timeout.
    libc = ctypes.CDLL(None, use_errno=True)
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"n": 0})
    pid0 = os.fork()
    if pid0 == 0:
        code = 90
        try:
            if libc.unshare(CLONE_NEWPID) != 0:
                code = 77
            else:
                pid1 = os.fork()
                if pid1 == 0:
                    c1 = 91
                    try:
                        assert os.getpid() == 1
                        # An idle helper thread kept by pid 1.
                        _write_while_held(p, {"n": 1}, held=0.1, timeout=3)
                        if libc.unshare(CLONE_NEWPID) != 0:
                            c1 = 77
                        else:
                            pid2 = os.fork()
                            if pid2 == 0:
                                c2 = 92
                                try:
                                    assert os.getpid() == 1
                                    try:
                                        _write_while_held(p, {"n": 2}, held=0.1, timeout=2)
                                        c2 = 0
                                    except statefile.LockTimeout:
                                        c2 = 3 if _free(p) else 4
                                finally:
                                    os._exit(c2)
                            r = wait_child(pid2, 20)
                            c1 = 94 if r is None else r
                    finally:
                        os._exit(c1)
                r = wait_child(pid1, 30)
                code = 95 if r is None else r
        finally:
            os._exit(code)
    code = wait_child(pid0, 40)
    if code == 77:
        pytest.skip("unshare(CLONE_NEWPID) refused here")
    assert code == 0, (
        f"exit {code}: 3 = the write in the nested namespace (pid 1, like its parent, "
        "whose idle helper it does not have) timed out though the lock was free"
    )


# ---------------------------------------------------------------------------------
# Exit with pool threads alive.

_EXIT_SCRIPT = textwrap.dedent(
    """
    import fcntl, os, sys, threading, time
    import statefile
    p = sys.argv[1]
    mode = sys.argv[2]
    lock = os.path.join(os.path.dirname(p), "." + os.path.basename(p) + ".lock")
    doc = statefile.Doc(p, lock_timeout=5)
    if mode == "idle":
        # A contended wait: its helper thread is kept idle for 5 s.
        fd = os.open(lock, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        threading.Timer(0.1, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        doc.write({"n": 1})
    elif mode == "blocked":
        # The test holds the lock: a write gives up, its helper stays blocked in flock.
        try:
            statefile.Doc(p, lock_timeout=0.1).write({"n": 1})
            sys.exit(5)
        except statefile.LockTimeout:
            pass
    print("done", flush=True)
    if len(sys.argv) > 3:
        os._exit(0)
    """
)


@pytest.mark.parametrize("mode", ["idle", "blocked"])
@pytest.mark.parametrize("how", ["return", "os._exit"])
def test_the_interpreter_exits_at_once_with_helper_threads_alive(
    tmp_path: Path, mode: str, how: str
) -> None:
    p = tmp_path / "a.json"
    script = tmp_path / "s.py"
    script.write_text(_EXIT_SCRIPT)
    statefile.Doc(p).write({"n": 0})
    holder = _hold(p) if mode == "blocked" else None
    try:
        args = [sys.executable, str(script), str(p), mode] + (["x"] if how == "os._exit" else [])
        start = time.monotonic()
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        took = time.monotonic() - start
    finally:
        if holder is not None:
            os.close(holder)
    assert r.returncode == 0 and r.stdout.strip() == "done", r
    assert took < 3, f"the interpreter took {took:.1f}s to exit (helpers kept 5 s?)"
    assert _free(p)


# ---------------------------------------------------------------------------------
# A child forked while other threads are inside statefile.


def _statefile_frames(pid: int) -> list[str]:
    """The statefile frames of a (hung) process's stack, by gdb if it is installed."""
    try:
        bt = subprocess.run(
            ["gdb", "-p", str(pid), "-batch", "-ex", "bt 12"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in bt.splitlines() if "crates/statefile/src" in line][:3]


def test_a_child_forked_while_threads_wait_for_locks_does_not_hang(tmp_path: Path) -> None:
    # FINDING: threads of the parent wait for locks other processes hold (so helper jobs
    # go through the pool) while the main thread forks workers, each of which writes a
    # document of its own once, under contention. A child forked while a parent thread
    # (a caller, or a helper thread between jobs) held the pool's mutex inherits it
    # locked: its first contended wait blocks for ever in helpers::run, past any
    # deadline (the pid check that resets the pool in a child is under that mutex).
    # Seen here: about one child in 150 hangs; in 6 hangs, 2 were in helpers::run
    # (lock.rs, the pool mutex, new in c9dde71) and 4 in Entry::enter (the registry
    # mutex, as before). The failure message names where this run's child hung.
    docs = [tmp_path / f"c{i}.json" for i in range(6)]
    for p in docs:
        statefile.Doc(p).write({"n": 0})
    mine = tmp_path / "child.json"
    statefile.Doc(mine).write({"n": 0})
    stop = threading.Event()

    def churn(p: Path) -> None:
        while not stop.is_set():
            try:
                _write_while_held(p, {"n": 1}, held=0.0005, timeout=1)
            except statefile.LockTimeout:
                pass

    threads = [threading.Thread(target=churn, args=(p,)) for p in docs]
    for t in threads:
        t.start()
    hung: int | None = None
    forks = 0
    failed: list[int | None] = []
    try:
        # Before the fix about one child in 150 hung; 15 s makes some 500 forks here.
        end = time.monotonic() + 15
        while time.monotonic() < end and hung is None:
            forks += 1
            pid = os.fork()
            if pid == 0:
                code = 9
                try:
                    _write_while_held(mine, {"n": forks}, held=0.01, timeout=2)
                    code = 0
                except statefile.LockTimeout:
                    code = 3
                finally:
                    os._exit(code)
            deadline = time.monotonic() + 8
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    if os.waitstatus_to_exitcode(status) != 0:
                        failed.append(os.waitstatus_to_exitcode(status))
                    break
                if time.monotonic() > deadline:
                    hung = pid
                    break
                time.sleep(0.002)
    finally:
        stop.set()
        for t in threads:
            t.join()
    where: list[str] = []
    if hung is not None:
        where = _statefile_frames(hung)
        os.kill(hung, 9)
        os.waitpid(hung, 0)
    assert hung is None, f"fork {forks}: the child hung in its write (8 s, timeout 2 s) at {where}"
    assert not failed, f"children failed: {failed}"
    print(f"{forks} forks, none hung")
