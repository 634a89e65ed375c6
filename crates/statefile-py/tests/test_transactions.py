"""Multi-document transactions (journal mode): Store.transaction, Store.read_tx,
Store.apply (the operations of `statefile tx`), and the journal calls. Real files,
real processes."""

from __future__ import annotations

import _thread
import fcntl
import hashlib
import json
import math
import multiprocessing
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import statefile


def journal_store(root: Path, **kw: Any) -> statefile.Store:
    root.mkdir(exist_ok=True)
    statefile.enable_journal(root)
    return statefile.Store(root, **kw)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_transaction_writes_several_documents_and_returns_the_result_and_a_receipt(
    tmp_path: Path,
) -> None:
    store = journal_store(tmp_path / "s")
    store.doc("queue.json").write([7, 8])

    def take(tx: statefile.Transaction) -> int:
        queue = tx.read("queue.json")
        job = queue.pop(0)
        tx.write("queue.json", queue)
        tx.write(f"jobs/{job}.json", {"id": job})
        assert tx.read(f"jobs/{job}.json") == {"id": job}  # its own write, seen
        return job

    job, receipt = store.transaction(take)
    assert job == 7
    assert isinstance(receipt, statefile.TxReceipt)
    assert store.doc("queue.json").read() == [8]
    assert store.doc("jobs/7.json").read() == {"id": 7}
    names = [d.name for d in receipt.documents]
    assert sorted(names) == ["jobs/7.json", "queue.json"]
    for d in receipt.documents:
        assert d.version == sha(Path(d.path)), d
    q = next(d for d in receipt.documents if d.name == "queue.json")
    assert q.previous is not None and q.previous != q.version
    assert receipt.versions["jobs/7.json"] == store.doc("jobs/7.json").version()
    assert next(d for d in receipt.documents if d.name == "jobs/7.json").previous is None


def test_read_default_version_expect_and_delete(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "s")
    v_a = store.doc("a.json").write({"n": 1}).version

    def body(tx: statefile.Transaction) -> list[Any]:
        out = [tx.read("missing.json", default=None), tx.version("missing.json")]
        with pytest.raises(statefile.NotFound) as e:
            tx.read("missing.json")
        assert e.value.path is not None and e.value.path.endswith("missing.json")
        tx.expect("a.json", v_a)
        tx.expect("missing.json", None)
        out.append(tx.version("a.json"))
        tx.delete("a.json")
        out.append(tx.read("a.json", default="gone"))
        out.append(tx.version("a.json"))  # as locked, whatever the transaction did since
        with pytest.raises(statefile.NotFound):
            tx.delete("a.json")
        return out

    out, receipt = store.transaction(body)
    assert out == [None, None, v_a, "gone", v_a]
    assert not (tmp_path / "s" / "a.json").exists()
    assert receipt.versions == {"a.json": None}
    assert receipt.documents[0].previous == v_a
    assert store.doc("a.json").restore(1).version == v_a  # a delete keeps a backup


# Regression: tx.expect(name, 'W/"<current>"') held, reading the weak tag as the version
# it wraps, where apply's if_match (and an HTTP If-Match) refuse it: it never matches.
def test_a_weak_etag_never_matches_a_precondition(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    v = store.doc("a.json").write({"n": 1}).version
    weak = f'W/"{v}"'

    def body(tx: statefile.Transaction) -> None:
        tx.write("a.json", {"n": 2})
        tx.expect("a.json", weak)

    with pytest.raises(statefile.InvalidName, match="is a weak entity tag, which never matches"):
        store.transaction(body)
    with pytest.raises(ValueError, match="if_match: .*is a weak entity tag"):
        store.apply([{"op": "put", "doc": "a.json", "value": 2, "if_match": weak}])
    assert store.doc("a.json").read() == {"n": 1}


def test_without_journal_mode_a_writing_transaction_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = statefile.Store(tmp_path)
    store.doc("a.json").write({"n": 1})
    with pytest.raises(statefile.InvalidName) as e:
        store.transaction(lambda tx: tx.write("a.json", {"n": 2}))
    assert "journal" in str(e.value)
    assert store.doc("a.json").read() == {"n": 1}
    # Reading needs no journal.
    assert store.transaction(lambda tx: tx.read("a.json"))[0] == {"n": 1}
    assert store.read_tx(["a.json", "b.json"]) == [{"n": 1}, None]


def test_a_failed_precondition_on_the_second_document_leaves_the_first_unchanged(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": 1})
    v_b = store.doc("b.json").write({"n": 1}).version
    store.doc("b.json").write({"n": 2})  # b moves on: v_b is stale
    before = {n: (root / n).read_bytes() for n in ("a.json", "b.json")}

    def body(tx: statefile.Transaction) -> None:
        tx.write("a.json", {"n": 100})
        tx.expect("b.json", v_b)
        tx.write("b.json", {"n": 100})

    with pytest.raises(statefile.Conflict) as e:
        store.transaction(body)
    assert e.value.path is not None and e.value.path.endswith("b.json")
    assert "b.json" in str(e.value)
    assert e.value.version == sha(root / "b.json")
    assert {n: (root / n).read_bytes() for n in before} == before
    st = statefile.journal_status(root)
    assert st is not None and st["records"] == 3  # the three plain writes only


def test_an_exception_in_fn_propagates_unchanged_and_nothing_is_written(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": 1})

    class Boom(Exception):
        pass

    raised = Boom("no")

    def body(tx: statefile.Transaction) -> None:
        tx.write("a.json", {"n": 2})
        tx.write("b.json", {"n": 2})
        raise raised

    with pytest.raises(Boom) as e:
        store.transaction(body)
    assert e.value is raised
    assert store.doc("a.json").read() == {"n": 1}
    assert not (root / "b.json").exists()
    # A value JSON cannot hold is refused at tx.write, before anything is written.
    with pytest.raises(TypeError):
        store.transaction(lambda tx: tx.write("a.json", {1, 2}))
    # The locks are released: a plain write goes through at once.
    statefile.Doc(root / "a.json", lock_timeout=0).write({"n": 3})


def test_an_async_fn_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    # An `async def` returns a coroutine that never ran: its writes would be lost
    # silently. Refused as a TypeError, in a transaction and in an update, with no
    # "never awaited" warning, and nothing written.
    import warnings

    root = tmp_path / "s"
    store = journal_store(root)
    doc = store.doc("a.json")
    doc.write({"n": 1})
    before = sha(root / "a.json")

    async def body(tx: statefile.Transaction) -> None:
        tx.write("a.json", {"n": 2})

    async def change(data: Any) -> None:
        data["n"] = 3

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="coroutine function"):
            store.transaction(body)
        with pytest.raises(TypeError, match="coroutine function"):
            doc.update(change)
    assert sha(root / "a.json") == before
    assert doc.read() == {"n": 1}


def test_a_restart_reruns_fn_and_the_result_is_still_right(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "s")
    store.doc("a.json").write({"n": 10})
    store.doc("b.json").write({"n": 20})
    calls: list[str] = []

    # b.json is touched first, then a.json, which sorts before it: the library stops
    # the attempt (a Conflict out of tx.read) and calls fn again with both locked.
    def move(tx: statefile.Transaction) -> int:
        calls.append("call")
        b = tx.read("b.json")
        a = tx.read("a.json")
        b["n"] -= 5
        a["n"] += 5
        tx.write("b.json", b)
        tx.write("a.json", a)
        return int(a["n"] + b["n"])

    total, receipt = store.transaction(move)
    assert len(calls) == 2, calls
    assert total == 30
    assert store.doc("a.json").read() == {"n": 15}
    assert store.doc("b.json").read() == {"n": 15}
    assert len(receipt.documents) == 2

    # A function that swallows the restart's Conflict is still run again, and only
    # the last run's result counts.
    calls.clear()

    def swallow(tx: statefile.Transaction) -> str:
        calls.append("call")
        tx.read("b.json")
        try:
            tx.read("a.json")
        except statefile.Conflict:
            return "first run"
        tx.write("a.json", {"n": 0})
        return "second run"

    result, _ = store.transaction(swallow)
    assert (result, len(calls)) == ("second run", 2)
    assert store.doc("a.json").read() == {"n": 0}


def test_tx_is_dead_outside_its_function_and_in_other_threads(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "s")
    kept: list[statefile.Transaction] = []
    errors: list[BaseException] = []

    def body(tx: statefile.Transaction) -> None:
        kept.append(tx)

        def other() -> None:
            try:
                tx.read("a.json", default=None)
            except BaseException as e:  # noqa: BLE001 - recorded for the assertion
                errors.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()

    store.transaction(body)
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    with pytest.raises(RuntimeError, match="over"):
        kept[0].write("a.json", 1)
    assert not (tmp_path / "s" / "a.json").exists()
    with pytest.raises(TypeError):
        store.transaction(42)  # type: ignore[arg-type]


def test_a_transaction_touches_at_most_1000_documents(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "s")
    store.doc("first.json").write({"n": 1})

    def body(tx: statefile.Transaction) -> None:
        tx.write("first.json", {"n": 2})
        for i in range(1, 1000):
            tx.read(f"d{i:04}.json", default=None)
        tx.read("first.json")  # a name already used costs nothing more
        tx.read(f"d{1:04}.json", default=None)
        tx.read("one-too-many.json", default=None)

    with pytest.raises(ValueError, match="at most 1000 documents"):
        store.transaction(body)
    assert store.doc("first.json").read() == {"n": 1}


def _hold_lock(path: str, ready: Any, release: Any) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    release.wait(60)
    os.close(fd)


def test_other_threads_run_while_a_transaction_waits_for_a_lock(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": 1})
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(root / ".a.json.lock"), ready, release))
    holder.start()
    try:
        assert ready.wait(60), "the holder never took the lock"
        done: dict[str, Any] = {}

        def run() -> None:
            t = time.monotonic()
            done["result"] = store.transaction(lambda tx: tx.write("a.json", {"n": 2}))
            done["seconds"] = time.monotonic() - t

        w = threading.Thread(target=run)
        w.start()
        count = 0
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            count += 1
        assert w.is_alive(), "the transaction did not wait for the other process's lock"
        release.set()
        w.join(60)
        assert not w.is_alive()
        assert count > 100_000, f"this thread was starved: {count} loops in 1 s"
        assert done["seconds"] >= 0.9
    finally:
        release.set()
        holder.join(60)
    assert store.doc("a.json").read() == {"n": 2}


def test_a_lock_timeout_fails_the_whole_transaction(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root, lock_timeout=0.3)
    store.doc("a.json").write({"n": 1})
    store.doc("b.json").write({"n": 1})
    fd = os.open(root / ".b.json.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:

        def body(tx: statefile.Transaction) -> None:
            tx.write("a.json", {"n": 2})
            tx.write("b.json", {"n": 2})

        with pytest.raises(statefile.LockTimeout):
            store.transaction(body)
    finally:
        os.close(fd)
    assert store.read_tx(["a.json", "b.json"]) == [{"n": 1}, {"n": 1}]


def test_ctrl_c_during_a_lock_wait_stops_the_transaction_at_once_and_writes_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    store = journal_store(root, lock_timeout=60)
    store.doc("a.json").write({"n": 1})
    store.doc("b.json").write({"n": 1})
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(root / ".b.json.lock"), ready, release))
    holder.start()
    try:
        assert ready.wait(60), "the holder never took the lock"

        def body(tx: statefile.Transaction) -> None:
            tx.write("a.json", {"n": 2})
            tx.write("b.json", {"n": 2})  # waits for the other process's lock

        # interrupt_main does nothing where SIGINT is ignored, as it is for a process
        # started in the background by a shell without job control (nohup cmd &):
        # Python's own handler for the test's duration.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            timer = threading.Timer(0.5, _thread.interrupt_main)
            timer.start()
            t = time.monotonic()
            with pytest.raises(KeyboardInterrupt):
                store.transaction(body)
            # At once: not after the lock wait (60 s), nor when the holder lets go.
            assert time.monotonic() - t < 10
            timer.join()
        finally:
            signal.signal(signal.SIGINT, previous)
    finally:
        release.set()
        holder.join(60)
    assert store.read_tx(["a.json", "b.json"]) == [{"n": 1}, {"n": 1}]
    # The helper let go of a.json's lock: a writer that will not wait gets it.
    deadline = time.monotonic() + 30
    while True:
        try:
            statefile.Doc(root / "a.json", lock_timeout=0).write({"n": 3})
            break
        except statefile.LockTimeout:
            assert time.monotonic() < deadline, "a.json stayed locked"
            time.sleep(0.05)
    assert store.doc("b.json").read() == {"n": 1}


TOTAL = 1000


def _transfers(root: str, seed: int, n: int) -> None:
    """Move random amounts between a.json and b.json, touching them in random order
    (so transactions restart), n times."""
    store = statefile.Store(root)
    rng = random.Random(seed)
    for _ in range(n):
        names = ["a.json", "b.json"]
        rng.shuffle(names)
        amount = rng.randint(1, 50)

        def move(tx: statefile.Transaction) -> None:
            src = tx.read(names[0])
            dst = tx.read(names[1])
            take = min(amount, src["n"])
            src["n"] -= take
            dst["n"] += take
            src["moves"] += 1
            tx.write(names[0], src)
            tx.write(names[1], dst)

        store.transaction(move)


def test_four_processes_moving_amounts_keep_the_sum_and_read_tx_sees_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": TOTAL, "moves": 0})
    store.doc("b.json").write({"n": 0, "moves": 0})
    ctx = multiprocessing.get_context("spawn")
    per_proc = 50
    procs = [ctx.Process(target=_transfers, args=(str(root), i, per_proc)) for i in range(4)]
    for p in procs:
        p.start()
    # Meanwhile: read_tx always sees one consistent pair.
    reads = 0
    while any(p.is_alive() for p in procs) or reads == 0:
        a, b = store.read_tx(["a.json", "b.json"])
        assert a["n"] + b["n"] == TOTAL, (a, b)
        reads += 1
        # flock is not fair: a reader retaking the locks at once could starve the
        # writers (which poll) past their lock timeout on a loaded machine.
        time.sleep(0.002)
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    a, b = store.read_tx(["b.json", "a.json"])[::-1]
    assert a["n"] + b["n"] == TOTAL
    assert a["moves"] + b["moves"] == 4 * per_proc
    assert reads > 1
    report = store.verify()
    assert report["healthy"], report


def test_apply_takes_the_operations_of_statefile_tx(tmp_path: Path) -> None:
    store = journal_store(tmp_path / "s")
    store.doc("b.json").write({"n": 1})
    store.doc("d.json").write({"old": True})
    store.doc("e.json").write({"e": [1, 2]})
    v_d = store.doc("d.json").version()
    out = store.apply(
        [
            {"op": "put", "doc": "a.json", "value": {"n": 1}, "if_none_match": "*"},
            {"op": "patch", "doc": "b.json", "merge": {"m": 2}},
            {"op": "patch", "doc": "b.json", "json_patch": [{"op": "add", "path": "/p", "value": 3}]},
            {"op": "append", "doc": "c.json", "pointer": "/items", "value": 4},
            {"op": "delete", "doc": "d.json", "if_match": v_d},
            {"op": "get", "doc": "e.json"},
        ]
    )
    assert store.doc("a.json").read() == {"n": 1}
    assert store.doc("b.json").read() == {"n": 1, "m": 2, "p": 3}
    assert store.doc("c.json").read() == {"items": [4]}
    assert not store.doc("d.json").exists()
    v = {n: store.doc(n).version() for n in ("a.json", "b.json", "c.json", "e.json")}
    assert out == [
        {"doc": "a.json", "op": "put", "version": v["a.json"]},
        {"doc": "b.json", "op": "patch", "version": v["b.json"]},
        {"doc": "b.json", "op": "patch", "version": v["b.json"]},
        {"doc": "c.json", "op": "append", "version": v["c.json"], "index": 0},
        {"doc": "d.json", "op": "delete", "version": None},
        {"doc": "e.json", "op": "get", "version": v["e.json"], "value": {"e": [1, 2]}},
    ]


def test_apply_with_a_failed_if_match_raises_conflict_naming_it_and_writes_nothing(
    tmp_path: Path,
) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": 1})
    stale = store.doc("b.json").write({"n": 1}).version
    store.doc("b.json").write({"n": 2})
    before = {n: (root / n).read_bytes() for n in ("a.json", "b.json")}
    with pytest.raises(statefile.Conflict) as e:
        store.apply(
            [
                {"op": "put", "doc": "a.json", "value": {"n": 9}},
                {"op": "put", "doc": "b.json", "value": {"n": 9}, "if_match": stale},
            ]
        )
    assert e.value.path is not None and e.value.path.endswith("b.json")
    assert {n: (root / n).read_bytes() for n in before} == before
    with pytest.raises(statefile.Conflict, match="a.json"):
        store.apply([{"op": "put", "doc": "a.json", "value": 0, "if_none_match": "*"}])
    assert {n: (root / n).read_bytes() for n in before} == before


def test_apply_refuses_bad_operations_and_patches_that_do_not_apply(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = journal_store(root)
    store.doc("a.json").write({"n": 1, "s": "text"})
    before = (root / "a.json").read_bytes()
    with pytest.raises(ValueError, match="operation 1.*unknown op"):
        store.apply([{"op": "get", "doc": "a.json"}, {"op": "frob", "doc": "a.json"}])
    with pytest.raises(ValueError, match="array"):
        store.apply({"op": "get", "doc": "a.json"})
    with pytest.raises(statefile.NotApplicable) as e:
        store.apply(
            [
                {"op": "put", "doc": "b.json", "value": 1},
                {"op": "append", "doc": "a.json", "pointer": "/s", "value": 1},
            ]
        )
    assert isinstance(e.value, ValueError) and e.value.kind == "not-applicable"
    assert e.value.path is not None and e.value.path.endswith("a.json")
    with pytest.raises(statefile.NotFound):
        store.apply([{"op": "get", "doc": "nothing.json"}])
    with pytest.raises(statefile.NotApplicable):
        store.apply(
            [{"op": "patch", "doc": "a.json", "json_patch": [{"op": "test", "path": "/n", "value": 2}]}]
        )
    assert (root / "a.json").read_bytes() == before
    assert not (root / "b.json").exists()


def test_enable_status_checkpoint_disable_and_verify_reports_the_journal(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    assert statefile.journal_status(root) is None
    assert statefile.Store(root).verify()["journals"] == []
    st = statefile.enable_journal(root, capacity=1 << 20)
    assert st["capacity"] == 1 << 20 and st["records"] == 0 and not st["needs_repair"]
    store = statefile.Store(root)
    for i in range(3):
        store.doc("a.json").write({"i": i})
    st = statefile.journal_status(root / "a.json")
    assert st is not None and st["records"] == 3 and st["root"] == str(root)
    report = store.verify()
    assert report["healthy"] and len(report["journals"]) == 1
    assert report["journals"][0]["records"] == 3
    ck = statefile.checkpoint(root)
    assert ck["documents"] >= 1 and ck["freed"] > 0
    st = statefile.journal_status(root)
    assert st is not None and st["records"] == 0
    store.doc("a.json").write({"i": 3})
    off = statefile.disable_journal(root)
    assert off["documents"] == 1
    assert statefile.journal_status(root) is None
    assert store.doc("a.json").read() == {"i": 3}
    with pytest.raises(statefile.NotFound):
        statefile.checkpoint(root)
    with pytest.raises(ValueError):
        statefile.enable_journal(root, checkpoint_age=-1.0)


def test_a_journal_enabled_with_swap_says_so_and_commits(tmp_path: Path) -> None:
    # swap=True: commits swap the new file in (RENAME_EXCHANGE) instead of renaming it
    # over the document; a property of the journal, reported by its status.
    root = tmp_path / "s"
    root.mkdir()
    st = statefile.enable_journal(root, swap=True)
    assert st["swap"] is True
    store = statefile.Store(root)
    for i in range(5):
        store.doc("a.json").write({"i": i})
    store.transaction(lambda tx: (tx.write("a.json", {"i": 9}), tx.write("b.json", [1]))[-1])
    assert store.doc("a.json").read() == {"i": 9} and store.doc("b.json").read() == [1]
    assert not [p for p in root.iterdir() if ".sf-" in p.name]
    st = statefile.journal_status(root)
    assert st is not None and st["swap"] is True
    statefile.checkpoint(root)
    plain = tmp_path / "p"
    plain.mkdir()
    assert statefile.enable_journal(plain)["swap"] is False


def test_lock_timeout_inf_works_in_journal_mode(tmp_path: Path) -> None:
    # Review (txreview): lock_timeout=math.inf ("waits as long as it takes") raised a
    # PanicException (overflow adding the timeout to an Instant) on a journal-mode store.
    store = journal_store(tmp_path / "s", lock_timeout=math.inf)
    store.transaction(lambda tx: tx.write("a.json", {"n": 1}))
    store.doc("a.json").write({"n": 2})
    assert store.read_tx(["a.json"]) == [{"n": 2}]


def test_a_doc_call_from_inside_fn_on_a_document_tx_holds_fails_at_once(tmp_path: Path) -> None:
    # Regression: such a call waited for the lock the transaction holds until its lock
    # timeout (forever with lock_timeout=inf, ignoring Ctrl-C), while the transaction
    # waited for fn. Now it raises statefile.Deadlock at once (Node: DEADLOCK).
    root = tmp_path / "s"
    store = journal_store(root, lock_timeout=3)
    store.doc("a.json").write({"n": 1})
    store.doc("free.json").write({"n": 1})
    (tmp_path / "alias").symlink_to(root)
    refused: list[tuple[str, float, statefile.Deadlock]] = []
    a = store.doc("a.json")

    def attempt(what: str, call: Any) -> None:
        start = time.monotonic()
        try:
            call()
        except statefile.Deadlock as e:
            refused.append((what, time.monotonic() - start, e))

    def fn(tx: statefile.Transaction) -> Any:
        v = tx.read("a.json")
        attempt("write", lambda: a.write({"n": 2}))
        attempt("write_if", lambda: a.write_if(a.version(), {"n": 2}))
        attempt("create", lambda: a.create({"n": 2}))
        attempt("delete", lambda: a.delete())
        attempt("restore", lambda: a.restore())
        attempt("update", lambda: a.update(lambda d: d.update(n=2)))
        attempt("with update", lambda: a.update().__enter__())
        attempt("another path", lambda: statefile.Doc(tmp_path / "alias" / "a.json").write({}))
        attempt("write_json", lambda: statefile.write_json(root / "a.json", {}))
        attempt("read_tx", lambda: store.read_tx(["free.json", "a.json"]))
        attempt("apply", lambda: store.apply([{"op": "put", "doc": "a.json", "value": 2}]))
        attempt("nested", lambda: store.transaction(lambda t: t.read("a.json")))
        # What does not need a lock tx holds goes through.
        seen = (a.read(), a.version() is not None, store.doc("free.json").update(lambda d: d["n"]))
        nested = store.transaction(lambda t: t.read("free.json"))[0]
        tx.write("a.json", {"n": v["n"] + 10})
        return seen, nested

    (seen, nested), _ = store.transaction(fn)
    assert [w for w, _, _ in refused] == [
        "write", "write_if", "create", "delete", "restore", "update", "with update",
        "another path", "write_json", "read_tx", "apply", "nested",
    ]
    for what, took, e in refused:
        assert took < 2, f"{what} failed at once, not after the lock timeout"
        assert isinstance(e, statefile.Error) and e.kind == "deadlock"
        assert e.path is not None and e.path.endswith("a.json")
        assert "use the function's tx" in str(e)
    assert seen == ({"n": 1}, True, 1) and nested == {"n": 1}
    assert a.read() == {"n": 11}, "the transaction committed as usual"
    # Once it is over, the same calls go through.
    a.update(lambda d: d.update(n=12))
    assert a.read() == {"n": 12}


def test_a_tx_call_waiting_for_a_lock_a_nested_transaction_holds_fails_at_once(
    tmp_path: Path,
) -> None:
    store = journal_store(tmp_path / "s", lock_timeout=3)
    store.doc("b.json").write(1)
    outer_refused: list[str] = []

    def outer(tx: statefile.Transaction) -> None:
        def inner(t: statefile.Transaction) -> None:
            t.read("b.json")
            try:
                tx.read("b.json")  # the outer tx would wait for the inner one's lock
            except statefile.Deadlock as e:
                outer_refused.append(str(e))

        store.transaction(inner)

    store.transaction(outer)
    assert len(outer_refused) == 1 and "b.json" in outer_refused[0]


def test_a_transaction_deletes_a_document_it_created(tmp_path: Path) -> None:
    # Review: a delete of a document the transaction itself wrote raised NotFound.
    store = journal_store(tmp_path / "s")
    out = store.apply(
        [{"op": "put", "doc": "n.json", "value": 1}, {"op": "delete", "doc": "n.json"}]
    )
    assert [(r["op"], r["version"]) for r in out] == [("put", None), ("delete", None)]

    def make_and_drop(tx: statefile.Transaction) -> None:
        tx.write("m.json", {"k": 1})
        tx.delete("m.json")
        assert tx.read("m.json", default=None) is None

    _, receipt = store.transaction(make_and_drop)
    assert list(receipt.documents) == []
    assert not (tmp_path / "s" / "n.json").exists()
    assert not (tmp_path / "s" / "m.json").exists()
    with pytest.raises(statefile.NotFound):
        store.apply(
            [
                {"op": "put", "doc": "n.json", "value": 1},
                {"op": "delete", "doc": "n.json"},
                {"op": "delete", "doc": "n.json"},
            ]
        )
    assert not (tmp_path / "s" / "n.json").exists()


def _journal_write(root: str, value: int) -> None:
    if not os.path.exists(os.path.join(root, ".statefile", "journal")):
        statefile.enable_journal(root)
    statefile.Doc(os.path.join(root, "a.json")).write({"v": value})


# Issue 14: a process that only read never opened the journal, so after a power loss
# Doc.read served the version an acknowledged write had replaced.
def test_a_read_after_a_power_loss_sees_the_acknowledged_write(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    ctx = multiprocessing.get_context("spawn")

    def write(value: int) -> None:
        w = ctx.Process(target=_journal_write, args=(str(root), value))
        w.start()
        w.join(60)
        assert w.exitcode == 0

    # The writers are other processes, gone by the "reboot": this one never opened
    # the journal before its read.
    write(1)
    old = (root / "a.json").read_bytes()
    write(2)
    # The power went out before the swap reached the disk, and the machine rebooted:
    # the old file is back, and the journal's shared state is gone.
    (root / "a.json").write_bytes(old)
    (root / ".statefile" / "journal-shm").write_bytes(bytes(8192))
    assert statefile.Doc(root / "a.json").read() == {"v": 2}
    assert json.loads((root / "a.json").read_text()) == {"v": 2}, "replayed into the file"
