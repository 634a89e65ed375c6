"""Doc: reads, writes, compare-and-swap, create, delete, backups, restore, receipts."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

import statefile
from conftest import temps


def test_write_read_and_the_file_is_plain_pretty_json(tmp_path: Path) -> None:
    p = tmp_path / "servers.json"
    doc = statefile.Doc(p)
    r = doc.write({"hosts": ["db1"], "port": 5432})
    assert doc.read() == {"hosts": ["db1"], "port": 5432}
    text = p.read_text()
    assert text == '{\n  "hosts": [\n    "db1"\n  ],\n  "port": 5432\n}\n'
    # A version is the SHA-256 of the bytes, as sha256sum prints it.
    assert r.version == hashlib.sha256(p.read_bytes()).hexdigest() == doc.version()
    assert r.created and not r.unchanged and r.durability == "full"
    assert r.path == str(p.resolve())
    assert json.loads(text) == doc.read()


def test_path_like_and_repr(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    assert os.fspath(doc) == str(tmp_path / "a.json") == doc.path
    assert "a.json" in repr(doc)


def test_read_versioned_unpacks_as_value_and_version(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write([1, 2])
    v = doc.read_versioned()
    value, version = v
    assert value == [1, 2] and version == doc.version()
    assert v.value == value and v.version == version and v.recovered is None


def test_write_if_is_compare_and_swap(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    v1 = doc.write({"n": 1}).version
    v2 = doc.write_if(v1, {"n": 2}).version
    with pytest.raises(statefile.Conflict) as e:
        doc.write_if(v1, {"n": 3})
    assert e.value.version == v2  # the version found
    assert e.value.kind == "conflict" and e.value.path == str(tmp_path / "a.json")
    assert doc.read() == {"n": 2}
    # An ETag ("...") is accepted too; a malformed version is a ValueError.
    doc.write_if(f'"{v2}"', {"n": 4})
    with pytest.raises(ValueError):
        doc.write_if("not-a-version", {})


# Regression: write_if('W/"<current>"') wrote, reading the weak tag as the version it
# wraps, where an HTTP If-Match (RFC 9110 13.1.1) and apply's if_match never match one.
def test_a_weak_etag_is_refused_wherever_a_version_is_compared(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({"n": 1})
    v = doc.write({"n": 2}).version
    weak = f'W/"{v}"'
    with pytest.raises(statefile.InvalidName, match="is a weak entity tag, which never matches") as e:
        doc.write_if(weak, {"n": 3})
    assert isinstance(e.value, ValueError) and v in str(e.value) and "13.1.1" in str(e.value)
    with pytest.raises(statefile.InvalidName, match="weak entity tag"):
        doc.delete(if_version=weak)
    assert doc.read() == {"n": 2}
    doc.write_if(f'"{v}"', {"n": 3})  # the strong ETag is the version
    # Naming a backup compares nothing: a weak tag of its version still finds it.
    doc.restore(weak)
    assert doc.read() == {"n": 2}


def test_create_only_once(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.create({"first": True})
    with pytest.raises(statefile.Conflict):
        doc.create({"second": True})
    assert doc.read() == {"first": True}


def test_missing_document(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "missing.json")
    with pytest.raises(FileNotFoundError) as e:
        doc.read()
    assert isinstance(e.value, statefile.NotFound) and isinstance(e.value, statefile.Error)
    assert e.value.errno == 2 and "missing.json" in str(e.value)
    assert doc.read_or(None) is None
    sentinel = {"given": 1}
    assert doc.read_or(sentinel) is sentinel
    assert not doc.exists()
    assert statefile.read_json(tmp_path / "missing.json", default=[]) == []
    with pytest.raises(statefile.NotFound):
        statefile.read_json(tmp_path / "missing.json")


def test_delete_keeps_a_backup_and_restore_undoes_it(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({"v": 1})
    doc.write({"v": 2})
    d = doc.delete()
    assert d.kept_as is not None and d.kept_as.endswith(".a.json.bak")
    with pytest.raises(statefile.NotFound):
        doc.read()
    doc.restore()
    assert doc.read() == {"v": 2}


def test_backups_and_restore_by_number_and_version(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json", backups=3)
    versions = [doc.write({"v": i}).version for i in range(4)]
    bs = doc.backups()
    assert [b.number for b in bs] == [1, 2, 3]
    assert [b.version for b in bs] == versions[2::-1]
    assert all(b.parses for b in bs)
    doc.restore(3)
    assert doc.read() == {"v": 0}
    doc.restore(versions[2])
    assert doc.read() == {"v": 2}
    with pytest.raises(ValueError):
        doc.restore(0)


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="durability"):
        statefile.Doc(tmp_path / "a.json", durability="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lock_timeout"):
        statefile.Doc(tmp_path / "a.json", lock_timeout=-1)
    with pytest.raises(statefile.InvalidName):
        statefile.Doc(tmp_path / ".a.json.lock")
    with pytest.raises(ValueError):  # InvalidName is a ValueError
        statefile.Doc(tmp_path / ".a.json.bak")


def test_missing_directory_needs_create_dirs(tmp_path: Path) -> None:
    with pytest.raises(statefile.NotFound):
        statefile.Doc(tmp_path / "a" / "b.json").write({})
    statefile.Doc(tmp_path / "a" / "b.json", create_dirs=True).write({})
    assert (tmp_path / "a" / "b.json").exists()


def test_durability_levels(tmp_path: Path) -> None:
    for level in ("full", "data", "none"):
        r = statefile.Doc(tmp_path / f"{level}.json", durability=level).write([level])  # type: ignore[arg-type]
        assert r.durability == level


def test_write_json_and_read_json(tmp_path: Path) -> None:
    p = tmp_path / "health.json"
    statefile.write_json(p, {"status": "ok"})
    statefile.write_json(str(p), {"status": "degraded"})
    assert statefile.read_json(p) == {"status": "degraded"}
    assert sorted(os.listdir(tmp_path)) == [".health.json.bak", ".health.json.lock", "health.json"]
    statefile.write_json(tmp_path / "x" / "y.json", 1, backups=0, create_dirs=True, durability="data")
    assert statefile.read_json(tmp_path / "x" / "y.json") == 1


def test_errors_pickle_across_processes(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({})
    v = doc.version()
    try:
        doc.write_if("0" * 64, {})
    except statefile.Conflict as e:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is statefile.Conflict and str(back) == str(e) and back.version == v
    try:
        statefile.Doc(tmp_path / "missing.json").read()
    except statefile.NotFound as e:
        back2 = pickle.loads(pickle.dumps(e))
        assert isinstance(back2, FileNotFoundError) and back2.errno == 2 and back2.path == e.path


def test_exception_hierarchy() -> None:
    assert issubclass(statefile.NotFound, FileNotFoundError)
    assert issubclass(statefile.LockTimeout, TimeoutError)
    assert issubclass(statefile.PermissionDenied, PermissionError)
    assert issubclass(statefile.NoSpace, OSError)
    assert issubclass(statefile.InvalidName, ValueError)
    assert issubclass(statefile.SerializeError, ValueError)
    for cls in (
        statefile.NotFound,
        statefile.Corrupt,
        statefile.Conflict,
        statefile.LockTimeout,
        statefile.NoSpace,
        statefile.PermissionDenied,
        statefile.InvalidName,
        statefile.Durability,
        statefile.SerializeError,
        statefile.IoError,
    ):
        assert issubclass(cls, statefile.Error)


def test_no_temp_or_lock_left_by_reads(tmp_path: Path) -> None:
    doc = statefile.Doc(tmp_path / "a.json")
    doc.write({})
    before = sorted(os.listdir(tmp_path))
    for _ in range(3):
        doc.read()
        doc.read_versioned()
        doc.read_cached()
    assert sorted(os.listdir(tmp_path)) == before
    assert temps(tmp_path) == []


def test_receipts_say_how_many_calls_one_write_answered(tmp_path: Path) -> None:
    # Issue 12: concurrent writes of one document in one process share one durable write
    # (group commit); every call it answered gets its receipt, which says how many.
    p = tmp_path / "a.json"
    lone = statefile.Doc(p).write({"n": 0})
    assert lone.batch == 1 and lone.queued >= 0.0
    receipts: list[statefile.Receipt] = []
    started = threading.Semaphore(0)
    mutex = threading.Lock()

    def writer(i: int) -> None:
        started.release()
        r = statefile.Doc(p).write({"n": i})
        with mutex:
            receipts.append(r)

    held = statefile.Doc(p).update()
    with held as data:  # the lock is held: the writers queue meanwhile
        threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for _ in threads:
            assert started.acquire(timeout=60)
        time.sleep(0.3)
        data["held"] = True
    for t in threads:
        t.join()
    assert held.receipt is not None
    receipts.append(held.receipt)
    shared = Counter(r.version for r in receipts)
    for r in receipts:
        assert r.batch == shared[r.version], "a receipt's batch is the calls its write answered"
    assert held.receipt.batch > 1, "the queued writes joined the held update's write"


def test_max_document_bytes_bounds_what_a_planted_huge_file_costs(tmp_path: Path) -> None:
    # A sparse 20 GiB file planted at a document's name: without a limit a read would
    # fill 20 GiB of memory. With one, every read is refused at once, naming the size
    # and the limit; a write replaces it at once (it is never hashed), keeping it aside
    # as .name.corrupt; a delete, which reports the version it removes, is refused.
    limit = 1 << 20
    huge = 20 << 30
    store = statefile.Store(tmp_path, max_document_bytes=limit)
    doc = store.doc("big.json")
    doc.write({"n": 1})
    with open(doc.path, "r+b") as f:
        f.truncate(huge)
    started = time.monotonic()
    for read in (doc.read, doc.read_versioned, doc.version):
        with pytest.raises(statefile.SerializeError) as e:
            read()
        assert str(huge) in str(e.value) and str(limit) in str(e.value), e.value
    with pytest.raises(statefile.SerializeError):
        doc.delete()
    assert os.path.getsize(doc.path) == huge
    receipt = doc.write({"n": 2})
    assert receipt.previous is None
    assert statefile.Doc(doc.path, max_document_bytes=limit).read() == {"n": 2}
    assert os.path.getsize(tmp_path / ".big.json.corrupt") == huge
    # A value whose stored form is over the limit is refused, nothing written.
    with pytest.raises(statefile.SerializeError):
        doc.write("x" * limit)
    assert doc.read() == {"n": 2}
    assert time.monotonic() - started < 10, "the planted file was read"


def test_max_document_bytes_must_be_a_size(tmp_path: Path) -> None:
    with pytest.raises((OverflowError, TypeError)):
        statefile.Doc(tmp_path / "a.json", max_document_bytes=-1)
    with pytest.raises(TypeError):
        statefile.Doc(tmp_path / "a.json", max_document_bytes="1 MB")  # type: ignore[arg-type]
