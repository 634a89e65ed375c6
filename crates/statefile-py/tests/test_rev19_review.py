"""rev19 review of 097a2b4 (forked children use their own lock queues, helper pool and
journal handles: `process::PerProcess`, and the package's `os.register_at_fork` hook).

Every test named `test_finding_*` FAILED at 097a2b4 (and at 15c6530): each is a finding,
its first comment says what is wrong (the control cases `[8]` and `[fresh]` pass). The
two tests of finding 2 pass from 27d42f0 on (the release thread made a PerProcess), and
findings 3's and 4's from the commits after the review (the umask read for each new
document; the transaction checks the pid); the
others are marked xfail with their reasons, known limits and defects left for a later
session. None is about the states 097a2b4 converted, which held (see the report); they
are what a forked child still inherits:

1. a forked child that outlives its parent keeps the parent's `flock` locks: the copies
   of the parent's descriptors share their open file descriptions, so a lock the parent
   held when it died is never released while the child lives. The journal's flush lock
   is waited for without a deadline: every writer of the tree, in every process, hangs
   (not a lock timeout: for ever) until that child ends. A document lock a parent
   thread held at the fork is kept the same way, and so is a replaced version queued
   for the release thread when the child was forked (its disk space, for the child's
   life);
2. the release thread's `OnceLock` (fs.rs `releaser()`) spawns a thread inside its
   initialisation: a child forked meanwhile inherits it "being initialised" and its
   first replace of an existing document hangs for ever in `get_or_init`; and it tells
   a child by its pid only (not by after_fork_in_child): pid 1 forked from pid 1 queues
   its replaced versions for its parent's thread, and keeps them open;
3. the umask is read once per process and cached (fs/unix.rs `process_umask`): a
   daemon child that sets `umask(0o077)` after the fork (or any process that changes
   it after its first write) creates new documents 0644, readable by everyone;
4. a child forked inside a `store.transaction(fn)` function waits for ever for the
   transaction's helper thread, which stayed in the parent (`with doc.update()` and
   `doc.update(fn)` check the pid and raise; the transaction does not);
5. the 65th process of a chain of nested forks shares its parent's lock queue (the
   documented 64-level limit), so it waits out its lock timeout for a turn the parent
   let go of: reached by a program that re-forks itself to restart;
6. a process forked without the Python hook (libc's fork: a Rust or C program) that
   gets the pid of a dead ancestor whose states it still has copies of (its parent
   never used statefile) takes them for its own: pids are used again;
7. (not about forks) `journal disable` and a writer of a document with a commit in
   flight deadlock until their lock timeouts.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import statefile
from conftest import skip_or_fail, wait_child


def _gdb_frames(pid: int) -> list[str]:
    """statefile's frames in a hung process's main thread (gdb, if installed)."""
    try:
        bt = subprocess.run(
            ["gdb", "-p", str(pid), "-batch", "-ex", "bt 16"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip()[:120] for line in bt.splitlines() if "crates/statefile/src" in line][:4]


def _flock_write_locks(ino: int) -> list[str]:
    """The exclusive flock entries of /proc/locks on the inode `ino`."""
    with open("/proc/locks") as f:
        return [
            line.strip()
            for line in f
            if " FLOCK " in line and " WRITE " in line and line.split()[5].endswith(f":{ino}")
        ]


# ---------------------------------------------------------------------------------
# 1. A forked child that outlives its parent keeps the parent's flock locks.

_JOURNAL_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import statefile
    doc = statefile.Doc(os.path.join(sys.argv[1], "a.json"))
    doc.write({"n": 0})
    child = os.fork()
    if child == 0:
        # A worker that never touches statefile (multiprocessing, gunicorn).
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    i = 0
    while True:
        i += 1
        doc.write({"n": i})
    """
)

_OTHER_WRITER = textwrap.dedent(
    """
    import os, sys
    import statefile
    statefile.Doc(os.path.join(sys.argv[1], "b.json"), lock_timeout=2).write({"n": 1})
    print("written", flush=True)
    """
)


@pytest.mark.xfail(
    run=False,
    reason="known limit (rev19, finding 1; runs 12 s): a forked child keeps copies of its parent's "
    "descriptors, so a lock its parent held when killed stays held while the child lives",
)
def test_finding_a_parent_killed_in_a_journal_flush_leaves_its_lock_to_a_forked_child(
    tmp_path: Path,
) -> None:
    # FINDING: a process with a journal open forks a worker that never touches statefile
    # (its copies of the journal's descriptors share their open file descriptions with
    # the parent's, and a flock belongs to the description). The parent is then killed
    # (OOM, SIGKILL) while it holds the journal's flush lock (during every commit's
    # fdatasync): the kernel does not release that lock, since the worker's copy keeps
    # the description open. The flush lock is waited for without a deadline: every
    # writer of the tree, in every process, any document, hangs for as long as the
    # worker lives (seen: 2 of 5 random kills here; a kill while /proc/locks shows the
    # lock, every time). Without the forked worker the kernel releases it at the death
    # (8 of 8 random kills: the next writer went on at once). process.rs says the copies
    # "keep nothing from the parent that it did not already have".
    statefile.enable_journal(tmp_path)
    script = tmp_path / "writer.py"
    script.write_text(_JOURNAL_WRITER)
    other = tmp_path / "other.py"
    other.write_text(_OTHER_WRITER)
    ino = os.stat(tmp_path / ".statefile" / "journal").st_ino
    kept: list[str] = []
    child = None
    try:
        for _ in range(10):
            p = subprocess.Popen(
                [sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True
            )
            assert p.stdout is not None
            child = int(p.stdout.readline())
            # Kill it the moment /proc/locks shows it in the flush lock.
            deadline = time.monotonic() + 10
            while not _flock_write_locks(ino) and time.monotonic() < deadline:
                pass
            p.kill()
            p.wait()
            kept = _flock_write_locks(ino)
            if kept:
                break
            # It let go between the look and the kill: again.
            os.kill(child, signal.SIGKILL)  # a grandchild: reaped by init
            child = None
        w = subprocess.Popen(
            [sys.executable, str(other), str(tmp_path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = w.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            where = _gdb_frames(w.pid)
            w.kill()
            w.communicate()
            pytest.fail(
                "FINDING: the parent died holding the journal's flush lock; its forked "
                f"child (which never used statefile) keeps it ({kept}): a writer of "
                "another document, in another process, with lock_timeout=2, still "
                f"waits after 10 s, at {where}"
            )
        assert w.returncode == 0 and out.strip() == "written", (out, err)
    finally:
        if child is not None:
            os.kill(child, signal.SIGKILL)


_HOLDER = textwrap.dedent(
    """
    import os, sys, threading, time
    import statefile
    doc = statefile.Doc(sys.argv[1])
    inside = threading.Event()
    def hold():
        with doc.update() as v:
            inside.set()
            time.sleep(120)
    threading.Thread(target=hold, daemon=True).start()
    inside.wait(10)
    child = os.fork()
    if child == 0:
        time.sleep(120)
        os._exit(0)
    print(child, flush=True)
    time.sleep(120)
    """
)


@pytest.mark.xfail(
    strict=False,
    reason="known limit (rev19, finding 1): the child's copy of the parent's lock descriptor keeps "
    "the lock after the parent dies",
)
def test_finding_a_child_forked_while_its_parent_held_a_lock_keeps_it_once_the_parent_is_dead(
    tmp_path: Path,
) -> None:
    # FINDING: a thread of the parent holds a document's lock (a `with doc.update()`
    # block) when the parent forks a worker; the parent is then killed. The worker never
    # touches statefile, but its copy of the lock's descriptor keeps the flock: the
    # document cannot be written by anyone (LockTimeout) while the worker lives, and in
    # journal mode a commit the dead parent left in flight is never adopted (adoption
    # waits for the document's lock). 097a2b4's docs: "a lock that a thread of the
    # parent holds at the fork stays the parent's".
    p = tmp_path / "a.json"
    statefile.Doc(p).write({"n": 0})
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen([sys.executable, str(script), str(p)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    try:
        proc.kill()
        proc.wait()
        try:
            statefile.Doc(p, lock_timeout=2).write({"n": 1})
        except statefile.LockTimeout:
            pytest.fail(
                "FINDING: the parent that held the lock is dead, and its forked child "
                "(which never used statefile) still holds the lock: LockTimeout"
            )
        assert statefile.Doc(p).read() == {"n": 1}
    finally:
        os.kill(child, signal.SIGKILL)


@pytest.mark.xfail(
    strict=False,
    reason="known limit (rev19, finding 1): a replaced version queued for the parent's release "
    "thread at the fork stays open in the child for its life",
)
def test_finding_a_child_forked_just_after_a_write_does_not_keep_the_replaced_version(
    tmp_path: Path,
) -> None:
    # FINDING (the same inheritance): a replaced version is held open for up to 20 ms
    # for the release thread (step 7). A child forked meanwhile (a worker started right
    # after a write) gets a copy of that descriptor in its copy of the queue, which no
    # thread of its ever closes: the old version's inode and disk blocks stay allocated
    # for the child's whole life (up to 16 versions, each as large as the document).
    p = tmp_path / "a.json"
    doc = statefile.Doc(p)
    for i in range(3):
        doc.write({"n": i, "pad": "x" * 4096})
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        time.sleep(0.5)
        kept = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith(str(tmp_path)) and link.endswith("(deleted)"):
                kept.append(link)
        assert not kept, (
            f"FINDING: 0.5 s after its parent's last write, the forked child still holds "
            f"the replaced versions {kept} open"
        )
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# ---------------------------------------------------------------------------------
# 2. The release thread's OnceLock, initialised (a thread spawned) when a fork lands.

_RELEASE_RACE = textwrap.dedent(
    """
    import ctypes, os, sys, threading, time
    import statefile
    d = sys.argv[1]
    a = statefile.Doc(os.path.join(d, "a.json"), durability="none")
    # Every per-process state made, but not the release thread: a new document
    # replaces nothing, and durability "none" never waits for a flush.
    statefile.Doc(os.path.join(d, "new-%d.json" % os.getpid()), durability="none").write(1)
    a.read()
    if sys.argv[2] == "wide":
        # Only widens the window (the thread's stack is populated while it is made):
        # nothing of statefile's is changed.
        if ctypes.CDLL(None).mlockall(3) != 0:
            print("nomlock", flush=True)
            sys.exit(0)
    # The first replace of an existing document starts the release thread, inside
    # the OnceLock's initialisation; meanwhile the main thread forks children, each of
    # which replaces it too.
    # Each child replaces a document of its own (no lock between them) that has a
    # backup: the backup replaced is the file held and handed to the release thread.
    for i in range(200):
        for name in ("k%d.json" % i, ".k%d.json.bak" % i):
            with open(os.path.join(d, name), "w") as f:
                f.write("0")
    t = threading.Thread(target=lambda: a.write({"n": 1}))
    t.start()
    kids = []
    while t.is_alive() and len(kids) < 200:
        # os.fork, not libc's: a child of libc's fork in a process whose other thread
        # asked for the GIL waits for that thread in Python's eval loop.
        pid = os.fork()
        if pid == 0:
            try:
                k = statefile.Doc(os.path.join(d, "k%d.json" % len(kids)), durability="none")
                k.write({"child": os.getpid()})
            finally:
                os._exit(0)
        kids.append(pid)
    t.join()
    hung = []
    deadline = time.monotonic() + 5
    for k in kids:
        while True:
            done, status = os.waitpid(k, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                hung.append(k)
                break
            time.sleep(0.005)
    print(len(kids), *hung, flush=True)
    time.sleep(120 if hung else 0)
    """
)


def test_finding_a_child_forked_while_the_release_thread_starts_does_not_hang(
    tmp_path: Path,
) -> None:
    # FINDING: fs.rs `releaser()` spawns the release thread inside `OnceLock::get_or_init`
    # (and `process_umask` and `boot_id` read /proc files inside theirs). A child forked
    # while another thread is in there inherits the OnceLock "being initialised" by a
    # thread it does not have: its first replace of an existing document waits in
    # `get_or_init` for ever (gdb: futex_wait in Once::call from releaser() at
    # fs.rs:400, from release_later). Without the widening below this happened here
    # naturally in 1 of ~40 fresh processes in one run and in the 2nd in another (a
    # spawn under load takes a while); docs/design.md only names PerProcess's own
    # initialisation ("a few instructions"). The widening (mlockall, and a 256 MiB
    # RUST_MIN_STACK for the spawned thread) makes the spawn take ~100 ms, so that forks
    # land in it every time; it changes nothing in statefile. Same at 15c6530.
    # With a backup, so that the first replace hands the old backup to the release thread.
    (tmp_path / "a.json").write_text("0")
    (tmp_path / ".a.json.bak").write_text("0")
    script = tmp_path / "race.py"
    script.write_text(_RELEASE_RACE)
    env = dict(os.environ, RUST_MIN_STACK=str(256 << 20))
    p = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path), "wide"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert p.stdout is not None
    hung: list[int] = []
    try:
        line = p.stdout.readline().split()
        if line == ["nomlock"]:
            skip_or_fail("mlockall refused here (needs root or a large RLIMIT_MEMLOCK)")
        assert line, "the race script died"
        kids, hung = int(line[0]), [int(h) for h in line[1:]]
        where = _gdb_frames(hung[0]) if hung else []
        assert not hung, (
            f"FINDING: {len(hung)} of {kids} children forked while a thread started the "
            f"release thread hung in their first write (5 s, no lock held), at {where}"
        )
    finally:
        p.kill()
        p.wait()
        for pid in hung:  # its children, now init's
            os.kill(pid, signal.SIGKILL)


_NESTED_RELEASE = textwrap.dedent(
    """
    import ctypes, os, sys, time
    import statefile
    libc = ctypes.CDLL(None, use_errno=True)
    d = sys.argv[1]

    def deleted() -> int:
        # Replaced versions of its own document this process still holds open (its
        # parent's, inherited, are the other test's).
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                link = os.readlink("/proc/self/fd/" + fd)
            except OSError:
                continue
            n += "b.json" in link and link.endswith("(deleted)")
        return n

    if libc.unshare(0x20000000) != 0:  # CLONE_NEWPID
        sys.exit(77)
    a = os.fork()
    if a == 0:
        code = 90
        try:
            # pid 1 of a namespace: writes, so its release thread runs.
            doc = statefile.Doc(os.path.join(d, "a.json"))
            for i in range(5):
                doc.write({"n": i})
            if libc.unshare(0x20000000) != 0:
                os._exit(77)
            b = os.fork()  # with the Python hook: after_fork_in_child runs
            if b == 0:
                c = 91
                try:
                    assert os.getpid() == 1
                    doc = statefile.Doc(os.path.join(d, "b.json"))
                    for i in range(12):
                        doc.write({"n": i})
                    time.sleep(0.5)
                    print(deleted(), flush=True)
                    c = 0
                finally:
                    os._exit(c)
            _, status = os.waitpid(b, 0)
            code = os.waitstatus_to_exitcode(status)
        finally:
            os._exit(code)
    _, status = os.waitpid(a, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_finding_pid_1_forked_from_pid_1_releases_the_versions_it_replaces(tmp_path: Path) -> None:
    # FINDING: the release thread (fs.rs) is not a PerProcess: it tells a child by its
    # pid only, not by after_fork_in_child, which 097a2b4 added for exactly this case,
    # pid 1 of a nested pid namespace forked from pid 1. That child takes its parent's
    # release thread for its own: it queues every replaced version for a thread it does
    # not have (and locks the mutex that thread may have held at the fork). The old
    # versions stay open, their disk space held, for the child's whole life (up to 16;
    # 10 or 11 of 12 writes here, 0.5 s after the last), where another child closes them.
    script = tmp_path / "nested.py"
    script.write_text(_NESTED_RELEASE)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    if r.returncode == 77:
        skip_or_fail("unshare(CLONE_NEWPID) refused here")
    assert r.returncode == 0, r
    held = int(r.stdout.split()[-1])
    assert held == 0, (
        f"FINDING: pid 1 forked from pid 1 still holds {held} replaced versions open 0.5 s "
        "after its last write (queued for its parent's release thread)"
    )


# ---------------------------------------------------------------------------------
# 3. The umask, read once per process.


def test_finding_a_document_created_after_a_forked_daemon_sets_its_umask_follows_it(
    tmp_path: Path,
) -> None:
    # FINDING: fs/unix.rs reads the umask once per process (/proc/self/status) and
    # caches it; a new document gets 0644 less that cached umask. A daemon forks and
    # sets umask(0o077) before writing its secrets (or any process tightens its umask
    # after its first write): its new documents are still 0644, readable by every user,
    # while a plain open() in the same child makes 0600. docs/design.md and
    # shared/DESIGN.md: "New documents get 0644 less the umask".
    old = os.umask(0o022)
    try:
        statefile.Doc(tmp_path / "before.json").write({"n": 0})
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.umask(0o077)
                statefile.Doc(tmp_path / "secret.json").write({"token": "s3cret"})
                with open(tmp_path / "plain", "w"):
                    pass
                code = 0
            finally:
                os._exit(code)
        assert wait_child(pid, 30) == 0
    finally:
        os.umask(old)
    plain = stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)
    secret = stat.S_IMODE(os.stat(tmp_path / "secret.json").st_mode)
    assert plain == 0o600
    assert secret == 0o600, (
        f"FINDING: a document created under umask 077 is {secret:#o} (open() made {plain:#o})"
    )


# ---------------------------------------------------------------------------------
# 4. A child forked inside a transaction's function.


@pytest.mark.parametrize("then", ["tx.write", "return"])
def test_finding_a_child_forked_inside_a_transaction_is_told_instead_of_waiting_for_ever(
    tmp_path: Path, then: str
) -> None:
    # FINDING: `store.transaction(fn)` runs the library's transaction in a helper thread
    # and `fn` talks to it over channels. A child forked inside `fn` (a worker started
    # from it) has the channels but not the thread: its next `tx` call waits for an
    # answer for ever, and returning from `fn` waits for the commit for ever without
    # even checking for signals (Ctrl-C does nothing; only SIGKILL ends it). The update
    # forms check the pid and raise RuntimeError ("cannot be finished in a child forked
    # inside it"); the transaction should too. (The parent's transaction commits.)
    statefile.enable_journal(tmp_path)
    store = statefile.Store(tmp_path)
    store.doc("a.json").write({"n": 0})
    in_child = False
    child = 0

    def fn(tx: statefile.Transaction) -> None:
        nonlocal in_child, child
        v = tx.read("a.json")
        pid = os.fork()
        if pid == 0:
            in_child = True
            if then == "tx.write":
                tx.write("a.json", {"n": "child"})
            return
        child = pid
        tx.write("a.json", {"n": v["n"] + 1})

    code = 3
    try:
        store.transaction(fn)
        code = 1  # the child's transaction "committed"
    except RuntimeError:
        code = 0
    except BaseException:  # noqa: BLE001 - reported through the exit code
        code = 2
    finally:
        if in_child:
            os._exit(code)
    r = wait_child(child, 10)
    assert store.doc("a.json").read() == {"n": 1}
    assert r is not None, (
        f"FINDING: a child forked inside a transaction's function hung in {then} "
        "(killed after 10 s) instead of raising"
    )
    assert r == 0, f"the child's transaction ended with code {r} (0: RuntimeError)"


# ---------------------------------------------------------------------------------
# 5. The 64 levels.

_CHAIN = textwrap.dedent(
    """
    import os, sys, threading, time
    import statefile
    path, depth = sys.argv[1], int(sys.argv[2])
    doc = statefile.Doc(path)
    for d in range(depth):
        # Each process of the chain uses statefile (a level of its own), then forks
        # the next and passes on its exit code (a program re-forking itself to restart
        # does the same, minus the wait).
        doc.write({"depth": d})
        if d == depth - 1:
            break
        pid = os.fork()
        if pid:
            _, status = os.waitpid(pid, 0)
            os._exit(os.waitstatus_to_exitcode(status))
    # The last parent holds the lock while it forks; the child waits for it.
    inside, release = threading.Event(), threading.Event()
    def hold():
        with doc.update() as v:
            inside.set()
            release.wait(10)
    t = threading.Thread(target=hold)
    t.start()
    inside.wait(10)
    pid = os.fork()
    if pid == 0:
        code = 9
        try:
            start = time.monotonic()
            statefile.Doc(path, lock_timeout=3).update(lambda v: v.update(last=True))
            code = 0 if time.monotonic() - start < 2 else 4
        except statefile.LockTimeout:
            code = 3
        finally:
            os._exit(code)
    time.sleep(0.3)
    release.set()
    t.join()
    _, status = os.waitpid(pid, 0)
    os._exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.parametrize(
    "depth",
    [
        8,
        pytest.param(
            64,
            marks=pytest.mark.xfail(
                strict=True,
                reason="documented limit (rev19, finding 6): the 64th level of nested forks "
                "shares its state with everything forked below it",
            ),
        ),
    ],
)
def test_finding_every_process_of_a_chain_of_forks_has_its_own_lock_queue(
    tmp_path: Path, depth: int
) -> None:
    # FINDING (a documented limit, reachable): a chain of processes each forked from the
    # last and each using statefile (a daemon that re-forks itself to restart) reaches
    # PerProcess's 64th level at its 65th process, which shares its parent's state as
    # every child did before 097a2b4: forked while a parent thread held a document's
    # lock, it waits out its lock timeout for a turn the parent let go of long before
    # (and shares the parent's journal handles, the damage 097a2b4 fixed). The 9th
    # process of a chain of 8 forks is fine.
    p = tmp_path / "a.json"
    script = tmp_path / "chain.py"
    script.write_text(_CHAIN)
    r = subprocess.run(
        [sys.executable, str(script), str(p), str(depth)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (
        f"FINDING: the last of {depth + 1} nested processes could not take the lock its "
        f"parent let go of after 0.3 s (exit {r.returncode}: 3 = LockTimeout after 3 s) {r.stderr[-500:]}"
    )


# ---------------------------------------------------------------------------------
# 6. A process id used again.

_PID_REUSE = textwrap.dedent(
    """
    import ctypes, os, sys, threading, time
    import statefile
    libc = ctypes.CDLL(None, use_errno=True)
    fork = ctypes.PyDLL(None).fork  # no Python hook: as a Rust or C program forks
    p, mode = sys.argv[1], sys.argv[2]
    statefile.Doc(p).write({"n": 0})
    if libc.unshare(0x20000000) != 0:  # CLONE_NEWPID
        sys.exit(77)

    def child(body):
        pid = os.fork() if body is init else fork()
        if pid == 0:
            code = 90
            try:
                code = body()
            finally:
                os._exit(code)
        return pid

    def init():
        # pid 1 of a new pid namespace: starts P (pid 2) and reaps everything.
        child(parent)
        code = 91
        while True:
            try:
                _, status = os.waitpid(-1, 0)
            except ChildProcessError:
                return code
            code = os.waitstatus_to_exitcode(status)

    def parent():
        # P: uses statefile, and forks C while a thread of its holds the lock.
        assert os.getpid() == 2
        doc = statefile.Doc(p)
        inside, release = threading.Event(), threading.Event()

        def hold():
            with doc.update() as v:
                inside.set()
                release.wait(10)

        t = threading.Thread(target=hold)
        t.start()
        inside.wait(10)
        child(middle)
        release.set()
        t.join()
        return 0  # P exits; pid 2 is free

    def middle():
        # C never uses statefile; once P is gone it forks G, which gets pid 2 again.
        while os.getppid() != 1:
            time.sleep(0.01)
        if mode == "reuse":
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write("1")
        g = child(grandchild)
        _, status = os.waitpid(g, 0)
        return os.waitstatus_to_exitcode(status)

    def grandchild():
        if (os.getpid() == 2) != (mode == "reuse"):
            return 78
        try:
            statefile.Doc(p, lock_timeout=2).update(lambda v: v.update(g=True))
            return 0
        except statefile.LockTimeout:
            return 3

    _, status = os.waitpid(child(init), 0)
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


@pytest.mark.parametrize(
    "mode",
    [
        "fresh",
        pytest.param(
            "reuse",
            marks=pytest.mark.xfail(
                strict=False,
                reason="known limit (rev19, finding 7): without the Python hook a child is told "
                "by its pid, and one given a dead ancestor's pid uses that ancestor's state",
            ),
        ),
    ],
)
def test_finding_a_forked_process_that_gets_a_dead_ancestors_pid_has_its_own_lock_queue(
    tmp_path: Path, mode: str
) -> None:
    # FINDING: PerProcess tells a child by its pid (and by after_fork_in_child, which
    # only the Python package's os.fork hook calls). P (pid 2 of a pid namespace) uses
    # statefile and forks C, by libc's fork (a Rust or C program, uwsgi's workers)
    # while a thread of P holds a document's lock; P exits. C never used statefile, so
    # its states are still P's copies; C forks G, which the kernel gives P's pid (pids
    # are used again; ns_last_pid makes it happen here at once). G takes P's copy for
    # its own: the queue says "held" by P's thread, and G's update waits out its lock
    # timeout on a free lock (with a mutex held at the fork, for ever; with a journal,
    # P's handle). With a fresh pid ("fresh", the control) G takes the lock at once.
    if os.geteuid() != 0:
        skip_or_fail("a pid namespace and ns_last_pid need root")
    script = tmp_path / "reuse.py"
    script.write_text(_PID_REUSE)
    r = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "a.json"), mode],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if r.returncode == 77:
        skip_or_fail("unshare(CLONE_NEWPID) refused here")
    assert r.returncode != 78, "the grandchild did not get the pid asked for"
    assert r.returncode == 0, (
        f"FINDING: G, with its dead grandparent's pid, waited out its lock timeout on a "
        f"lock nobody held (exit {r.returncode}: 3 = LockTimeout) {r.stderr[-800:]}"
    )


# ---------------------------------------------------------------------------------
# 7. Found on the way (not about forks): a disable and a writer wait for each other.

_DISABLER = textwrap.dedent(
    """
    import sys, time
    import statefile
    time.sleep(0.05)
    try:
        statefile.disable_journal(sys.argv[1], lock_timeout=3)
    except statefile.LockTimeout as e:
        print(e, flush=True)
        sys.exit(3)
    """
)


@pytest.mark.xfail(
    strict=False,
    reason="known defect (rev19, finding 5): a disable's checkpoint waits for a document's lock "
    "held by a writer that waits for the disable; both time out (LockTimeout)",
)
def test_finding_journal_disable_and_a_writer_of_a_document_do_not_wait_for_each_other(
    tmp_path: Path,
) -> None:
    # FINDING (not about forks; found while a forked child disabled its parent's
    # journal, and the same with a separate process): `journal disable` marks the
    # journal "disabling" and checkpoints; the checkpoint looks at the commits in flight
    # (still_in_flight), then adopts each (adopt -> lock_entries), waiting for its
    # document's lock before looking again. Meanwhile the commit's writer finished it,
    # let go, took the lock again for its next write, found the journal disabling and
    # waits for the disable (wait_disabled, atomic.rs) with the lock held. Each waits
    # for the other until its lock timeout: the disable fails (LockTimeout on
    # .a.json.lock, gdb: checkpoint_locked -> adopt -> lock_entries), and so does the
    # write ("being disabled and its checkpoint took too long"). Seen in about 1 run of
    # 3 here, with the default 30 s timeouts.
    script = tmp_path / "disable.py"
    script.write_text(_DISABLER)
    failures = []
    for trial in range(20):
        root = tmp_path / f"t{trial}"
        root.mkdir()
        statefile.enable_journal(root)
        doc = statefile.Doc(root / "a.json", lock_timeout=3)
        doc.write({"n": 0})
        p = subprocess.Popen(
            [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True
        )
        try:
            for i in range(1, 300):
                try:
                    doc.write({"n": i})
                except statefile.LockTimeout as e:
                    failures.append(f"trial {trial}: the write: {e}")
                    break
        finally:
            out, _ = p.communicate(timeout=60)
        if p.returncode != 0:
            failures.append(f"trial {trial}: the disable (exit {p.returncode}): {out.strip()}")
        if failures:
            break
    assert not failures, "FINDING: a disable and a writer deadlocked until their lock timeouts: " + "; ".join(failures)
