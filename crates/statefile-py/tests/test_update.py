"""Locked read-modify-write in both forms, and what the GIL does meanwhile."""

from __future__ import annotations

import decimal
import errno
import fcntl
import json
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import statefile
from conftest import temps, wait_child


def test_with_block_writes_on_a_clean_exit(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "view" / "resData.json", create_dirs=True)
    with doc.update(default=dict) as data:
        data.setdefault("cases", []).append({"id": 1})
    with doc.update() as data:
        data["cases"].append({"id": 2})
    assert doc.read() == {"cases": [{"id": 1}, {"id": 2}]}


def test_with_block_discards_on_an_exception_and_it_propagates(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({"n": 1})
    before = (tmp_path / "a.json").read_bytes()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with doc.update() as data:
            data["n"] = 2
            raise Boom()
    assert (tmp_path / "a.json").read_bytes() == before
    assert temps(tmp_path) == []
    # The lock was released: the next update does not wait.
    t = time.monotonic()
    doc.update(lambda d: d.__setitem__("n", 3))
    assert time.monotonic() - t < 5
    assert doc.read() == {"n": 3}


def test_the_receipt_of_a_block(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    u = doc.update(default=list)
    assert u.receipt is None
    with u as data:
        data.append(1)
    assert u.receipt is not None and u.receipt.version == doc.version() and u.receipt.created
    # Reusable, one block at a time.
    with u as data:
        data.append(2)
        with pytest.raises(RuntimeError):
            u.__enter__()
    assert doc.read() == [1, 2]


def test_function_form_returns_what_the_function_returns(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({"runs": []})
    n = doc.update(lambda d: (d["runs"].append("r1"), len(d["runs"]))[1])
    assert n == 1
    assert doc.update(lambda d: d["runs"].append("r2")) is None
    assert doc.read() == {"runs": ["r1", "r2"]}


def test_function_form_raising_writes_nothing(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({"runs": []})
    before = (tmp_path / "a.json").read_bytes()

    def bad(d: Any) -> None:
        d["runs"].append("half")
        raise KeyError("nope")

    with pytest.raises(KeyError):
        doc.update(bad)
    assert (tmp_path / "a.json").read_bytes() == before


def test_missing_document_without_a_default_is_not_found(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    with pytest.raises(statefile.NotFound):
        doc.update(lambda d: None)
    with pytest.raises(statefile.NotFound):
        with doc.update():
            pass
    assert not (tmp_path / "a.json").exists()


def test_defaults_value_or_factory_and_the_callers_object_is_not_mutated(tmp_path: Path) -> None:
    mine = {"cases": []}
    doc = statefile.Doc(tmp_path / "a.json")
    with doc.update(default=mine) as data:
        data["cases"].append(1)
    assert mine == {"cases": []}
    calls = []
    doc2 = statefile.Doc(tmp_path / "b.json")
    doc2.update(lambda d: d.append(1), default=lambda: calls.append(1) or [])
    doc2.update(lambda d: d.append(2), default=lambda: calls.append(1) or [])
    assert doc2.read() == [1, 2] and calls == [1]  # the factory runs only when missing
    # null is a legitimate default value
    doc3 = statefile.Doc(tmp_path / "c.json")
    doc3.update(lambda d: None, default=None)
    assert doc3.read() is None
    with pytest.raises(TypeError, match="unexpected keyword"):
        doc3.update(lambda d: None, defualt=None)  # type: ignore[call-overload]


def test_an_updated_value_json_cannot_hold_aborts_the_block(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({})
    with pytest.raises(TypeError, match="set"):
        with doc.update() as data:
            data["s"] = {1}
    assert doc.read() == {}


def test_corrupt_document_refuses_update(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    p.write_text('{"cases": [')
    with pytest.raises(statefile.Corrupt) as e:
        with statefile.Doc(p).update():
            pass
    assert e.value.path == str(p)
    assert p.read_text() == '{"cases": ['


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    with statefile.Doc(path).update() as data:
        data["held"] = True
        ready.set()
        release.wait(30)


def test_other_threads_run_while_one_waits_for_a_lock_held_by_another_process(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({})
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(p), ready, release))
    holder.start()
    try:
        assert ready.wait(60), "the holder never took the lock"
        waited: dict[str, Any] = {}

        def writer() -> None:
            t = time.monotonic()
            waited["receipt"] = statefile.Doc(p).write({"from": "waiter"})
            waited["seconds"] = time.monotonic() - t

        w = threading.Thread(target=writer)
        w.start()
        # While the writer waits for the lock (GIL released), this thread counts.
        count = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            count += 1
        assert w.is_alive(), "the writer did not wait for the other process's lock"
        release.set()
        w.join(60)
        assert not w.is_alive()
        assert count > 100_000, f"this thread was starved: {count} loops in 1 s"
        assert waited["seconds"] >= 0.9 and waited["receipt"].lock_wait >= 0.9
    finally:
        release.set()
        holder.join(60)
    assert statefile.Doc(p).read() == {"from": "waiter"}


def test_lock_timeout_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    statefile.Doc(p).write({})
    # Another program taking the documented lock (flock on .a.json.lock) directly.
    fd = os.open(tmp_path / ".a.json.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        doc = statefile.Doc(p, lock_timeout=0.3)
        t = time.monotonic()
        with pytest.raises(TimeoutError) as e:
            doc.write({"x": 1})
        assert isinstance(e.value, statefile.LockTimeout) and e.value.errno == errno.ETIMEDOUT
        assert time.monotonic() - t >= 0.3
        with pytest.raises(statefile.LockTimeout):
            with doc.update():
                pass
        with pytest.raises(statefile.LockTimeout):
            doc.update(lambda d: None)
    finally:
        os.close(fd)
    assert statefile.Doc(p).read() == {}


def test_threads_in_with_blocks_lose_nothing(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json", durability="none")
    errors: list[BaseException] = []

    def worker(t: int) -> None:
        try:
            for i in range(25):
                if i % 2:
                    with doc.update(default=dict) as data:
                        data.setdefault("items", []).append(f"{t}-{i}")
                else:
                    doc.update(lambda d: d.setdefault("items", []).append(f"{t}-{i}"), default=dict)
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    items = doc.read()["items"]
    assert sorted(items) == sorted(f"{t}-{i}" for t in range(8) for i in range(25))


def test_an_abandoned_block_releases_the_lock(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json", lock_timeout=10)
    doc.write({"n": 0})

    def gen() -> Any:
        with doc.update() as data:
            data["n"] = 1
            yield data

    g = gen()
    next(g)
    del g  # closes the generator: GeneratorExit inside the block, nothing written
    doc.update(lambda d: d.__setitem__("n", 2))
    assert doc.read() == {"n": 2}
    # Entered and dropped without __exit__ at all: the lock is released, nothing written.
    u = doc.update()
    u.__enter__()["n"] = 3
    del u
    t = time.monotonic()
    doc.update(lambda d: d.__setitem__("n", 4))
    assert time.monotonic() - t < 5
    assert doc.read() == {"n": 4}


def test_asyncio_keeps_running_while_a_call_waits_for_the_lock_in_a_thread(tmp_path: Path) -> None:
    import asyncio

    p = tmp_path / "a.json"
    doc = statefile.Doc(p)
    doc.write({})
    fd = os.open(tmp_path / ".a.json.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another holder, released by the event loop at 0.5 s

    async def main() -> tuple[int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        task = asyncio.create_task(ticker())
        asyncio.get_running_loop().call_later(0.5, os.close, fd)
        r = await asyncio.to_thread(doc.write, {"from": "asyncio"})
        task.cancel()
        return ticks, r.lock_wait

    ticks, waited = asyncio.run(main())
    assert waited >= 0.4
    assert ticks >= 20, f"the event loop ran only {ticks} times in {waited:.2f} s"
    assert doc.read() == {"from": "asyncio"}


def test_a_call_inside_an_update_on_its_own_document_fails_at_once(tmp_path: Path) -> None:
    # Regression: a write (or another update) of the document from inside its own
    # update's function or `with` block waited for the lock the update holds until the
    # lock timeout (forever with lock_timeout=inf), while the update waited for it. Now
    # it raises statefile.Deadlock at once, as inside a transaction's function.
    path = tmp_path / "a.json"
    doc = statefile.Doc(path, lock_timeout=5)
    doc.write({"n": 1})
    other = statefile.Doc(tmp_path / "b.json", lock_timeout=5)
    same = statefile.Doc(tmp_path / "." / "a.json", lock_timeout=5)
    refused: list[tuple[str, float]] = []

    def attempt(what: str, call: Any) -> None:
        start = time.monotonic()
        with pytest.raises(statefile.Deadlock, match="a.json"):
            call()
        refused.append((what, time.monotonic() - start))

    def attempts(n: int) -> None:
        attempt("write", lambda: doc.write({"n": 99}))
        attempt("another handle", lambda: same.write({"n": 99}))
        attempt("update", lambda: doc.update(lambda d: d.update(n=99)))
        attempt("with update", lambda: doc.update().__enter__())
        attempt("write_json", lambda: statefile.write_json(path, {"n": 99}))
        # What needs no lock of this document goes through.
        assert doc.read()["n"] == n
        other.write({"m": n})

    def fn(d: dict[str, Any]) -> None:
        attempts(1)
        d["n"] += 1

    doc.update(fn)
    assert doc.read() == {"n": 2}
    with doc.update() as data:
        attempts(2)
        data["n"] += 1
    assert doc.read() == {"n": 3}
    assert len(refused) == 10
    assert all(t < 2.0 for _, t in refused), refused
    assert "its own update" in str(pytest.raises(statefile.Deadlock, doc.update, lambda d: doc.write(d)).value)
    # Outside the updates, every call works again on this thread.
    doc.write({"n": 4})
    doc.update(lambda d: d.update(n=5))
    assert doc.read() == {"n": 5}


def test_an_update_block_left_open_and_dropped_leaves_nothing_behind(tmp_path: Path) -> None:
    # A `with` block's object entered but never exited holds the lock until it is
    # dropped; afterwards this thread's calls on the document are not refused.
    doc = statefile.Doc(tmp_path / "a.json", lock_timeout=5)
    doc.write({"n": 1})
    block = doc.update()
    block.__enter__()
    with pytest.raises(statefile.Deadlock):
        doc.write({"n": 2})
    del block
    import gc

    gc.collect()
    doc.write({"n": 3})
    assert doc.read() == {"n": 3}


def test_python_code_an_update_runs_outside_its_function_is_refused_too(tmp_path: Path) -> None:
    # Regression: the self-deadlock guard covered only the update's function (or the
    # `with` block). Python code that statefile itself runs under the document's lock
    # was outside it: the `default=` factory, and what converting the value back runs
    # (a Decimal subclass's is_finite, a list subclass's __iter__). A write of the same
    # document from there waited for the lock the update holds, until the lock timeout
    # (forever with lock_timeout=inf), instead of raising Deadlock at once.
    path = tmp_path / "a.json"
    doc = statefile.Doc(path, lock_timeout=30)

    def writes_the_document() -> None:
        doc.write({"from": "inside"})

    class Sneaky(decimal.Decimal):
        def is_finite(self) -> bool:
            writes_the_document()
            return True

    class SneakyList(list[Any]):
        def __iter__(self) -> Any:
            writes_the_document()
            return super().__iter__()

    def factory() -> dict[str, Any]:
        writes_the_document()
        return {}

    def quickly_deadlock(call: Any) -> None:
        start = time.monotonic()
        with pytest.raises(statefile.Deadlock, match="a.json"):
            call()
        assert time.monotonic() - start < 10

    # The factory, in the function form and the `with` form (the document is missing).
    quickly_deadlock(lambda: doc.update(lambda d: None, default=factory))
    with pytest.raises(statefile.Deadlock):
        with doc.update(default=factory):
            pass
    assert not path.exists()
    doc.write({"n": 0})
    # Converting the changed value back.
    quickly_deadlock(lambda: doc.update(lambda d: d.update(n=Sneaky(5))))
    quickly_deadlock(lambda: doc.update(lambda d: d.update(items=SneakyList([1]))))

    def in_a_block() -> None:
        with doc.update() as d:
            d["n"] = Sneaky(5)

    quickly_deadlock(in_a_block)
    # Nothing was written by any of them, and the lock is free again.
    assert doc.read() == {"n": 0}
    doc.write({"n": 1})
    assert doc.read() == {"n": 1}


def test_a_child_forked_inside_an_update_block_cannot_finish_it_and_does_not_hang(tmp_path: Path) -> None:
    # Regression: a child process forked inside `with doc.update()` hung for ever when
    # it left the block: it waited for the block's helper thread, which fork does not
    # copy (it runs on, holding the lock, in the parent). Now leaving the block in the
    # child raises at once and writes nothing; the parent's block is unaffected.
    doc = statefile.Doc(tmp_path / "a.json", lock_timeout=30)
    doc.write({"n": 1})

    def block() -> int:
        with doc.update() as data:
            data["n"] = 2
            pid = os.fork()
            if pid == 0:
                data["n"] = 99
        return pid

    try:
        pid = block()
    except BaseException as e:  # only in the child
        os._exit(0 if isinstance(e, RuntimeError) and "forked inside it" in str(e) else 5)
    if pid == 0:
        os._exit(6)  # the child left the block as if it had written
    deadline = time.monotonic() + 20
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung leaving the block")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(status) == 0
    assert doc.read() == {"n": 2}




def test_a_child_forked_in_the_default_factory_does_not_hang_leaving_the_block(tmp_path: Path) -> None:
    # Regression (review of c1e440c): the block's pid was taken after the default
    # factory ran, so a child forked in the factory recorded its own and, leaving the
    # block, waited for ever for the helper thread, which only the parent has.
    doc = statefile.Doc(tmp_path / "a.json", lock_timeout=30)
    forked: list[int] = []

    def factory() -> dict[str, Any]:
        forked.append(os.fork())
        return {}

    try:
        with doc.update(default=factory) as data:
            data["who"] = "parent" if forked[0] else "child"
    except BaseException as e:
        if forked and forked[0] == 0:
            os._exit(0 if isinstance(e, RuntimeError) else 5)
        raise
    if forked[0] == 0:
        os._exit(6)  # the child left the block as if it had written
    code = wait_child(forked[0], 10)
    assert code is not None, "the child forked in the default factory hung leaving the block"
    assert code == 0, code
    assert doc.read() == {"who": "parent"}


def test_a_child_forked_in_an_update_function_writes_nothing(tmp_path: Path) -> None:
    # Regression (review of c1e440c): a child forked inside the function form went on,
    # when the function returned, to write the document under the lock it shares with
    # the parent (one open file), and released that lock: the parent's own write then
    # failed with Conflict. As in the `with` form, the child now gets a RuntimeError
    # and writes nothing, and the lock stays the parent's.
    path = tmp_path / "a.json"
    doc = statefile.Doc(path, lock_timeout=30)
    doc.write({"n": 1})
    seen: dict[str, Any] = {}

    def f(data: dict[str, Any]) -> int:
        pid = os.fork()
        if pid == 0:
            seen["child"] = True
            data["n"] = 99
            return 0
        seen["code"] = wait_child(pid, 10)
        seen["on_disk"] = json.loads(path.read_text())
        data["n"] = 2
        return pid

    error: BaseException | None = None
    try:
        pid = doc.update(f)
    except BaseException as e:
        if seen.get("child"):
            os._exit(0 if isinstance(e, RuntimeError) else 5)
        error = e
    if seen.get("child"):
        os._exit(6)  # the child's update returned: it wrote
    assert seen["code"] == 0, seen
    assert seen["on_disk"] == {"n": 1}, f"the forked child wrote the document: {seen}"
    assert error is None, f"the parent's update failed: {error!r}; the document is {doc.read()}"
    assert doc.read() == {"n": 2}


def _write_while_held_elsewhere(doc: statefile.Doc, value: Any) -> float:
    """Write `value` while another open file of the lock holds its flock for 0.2 s;
    the seconds the write took."""
    path = Path(doc.path)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        threading.Timer(0.2, fcntl.flock, (fd, fcntl.LOCK_UN)).start()
        start = time.monotonic()
        doc.write(value)
        return time.monotonic() - start
    finally:
        os.close(fd)


def test_a_child_forked_after_waiting_for_a_lock_waits_for_one_too(tmp_path: Path) -> None:
    # The threads that wait in flock for a lock held elsewhere are kept for the next
    # wait. A child forked after one was kept has none of them: its own wait must start
    # its own, not hand the wait to a thread that only the parent has (and time out).
    doc = statefile.Doc(tmp_path / "a.json", lock_timeout=5)
    doc.write({"n": 0})
    assert _write_while_held_elsewhere(doc, {"n": 1}) >= 0.15
    pid = os.fork()
    if pid == 0:
        code = 7
        try:
            took = _write_while_held_elsewhere(doc, {"n": 2})
            code = 0 if took < 4 else 8
        finally:
            os._exit(code)
    assert wait_child(pid, 20) == 0
    assert doc.read() == {"n": 2}
    assert _write_while_held_elsewhere(doc, {"n": 3}) >= 0.15
    assert doc.read() == {"n": 3}
