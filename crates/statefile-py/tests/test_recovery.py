"""Safe reads: a damaged document reads from its backup with the fallback policy and
recover() repairs it; a cached reader sees another process's write."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

import statefile


@pytest.mark.parametrize("damage", ["truncated", "zero-byte"])
def test_a_damaged_job_file_reads_from_its_backup_and_recover_repairs_it(
    tmp_path: Path, damage: str
) -> None:
    store = statefile.Store(tmp_path)
    job = store.doc("jobs/abc123.json")
    job.write({"id": "abc123", "status": "running"})
    job.write({"id": "abc123", "status": "done", "rows": 120})
    p = tmp_path / "jobs" / "abc123.json"
    data = p.read_bytes()
    damaged = data[: len(data) // 2] if damage == "truncated" else b""
    p.write_bytes(damaged)

    with pytest.raises(statefile.Corrupt) as e:
        job.read()
    assert e.value.backup_exists and e.value.path == str(p)
    if damage == "zero-byte":
        assert "empty" in str(e.value)
    else:
        assert e.value.line >= 1

    safe = statefile.Doc(p, fallback=True)
    v = safe.read_versioned()
    assert v.value == {"id": "abc123", "status": "running"}
    assert v.recovered is not None and v.recovered.backup == 1
    assert safe.read() == {"id": "abc123", "status": "running"}
    # Updating a damaged document would build on a guess: refused until repaired.
    with pytest.raises(statefile.Corrupt):
        job.update(lambda d: None)

    report = store.verify()
    assert report["needs_repair"]
    (finding,) = report["findings"]
    assert finding["problem"] == "corrupt-document" and finding["path"] == str(p)
    assert finding["good_backup"] is not None

    fixed = store.recover()
    assert [f["action"] for f in fixed["findings"]] == ["restored"]
    assert job.read() == {"id": "abc123", "status": "running"}
    assert (tmp_path / "jobs" / ".abc123.json.corrupt").read_bytes() == damaged
    assert store.verify()["healthy"]
    job.update(lambda d: d.__setitem__("status", "done"))


def test_module_level_verify_and_recover_of_one_file(tmp_path: Path) -> None:
    p = tmp_path / "pipeline_health.json"
    statefile.write_json(p, {"status": "success"})
    statefile.write_json(p, {"status": "success", "source": "x"})
    p.write_text('{\n  "status": "success",\n  "source": ')  # the seed's truncated file
    assert statefile.verify(p)["needs_repair"]
    assert statefile.recover(p)["findings"][0]["action"] == "restored"
    assert statefile.read_json(p) == {"status": "success"}


def _writer(path: str, value: int) -> None:
    statefile.Doc(path).write({"value": value})


def test_a_cached_reader_sees_a_write_by_another_process(tmp_path: Path) -> None:
    p = tmp_path / "schedule.json"
    reader = statefile.Doc(p)
    reader.write({"value": 0})
    assert reader.read_cached() == {"value": 0}
    # Old enough for the cache to trust the file's timestamps, so a stale entry would be served.
    old = time.time() - 10
    os.utime(p, (old, old))
    assert reader.read_cached() == {"value": 0}
    assert reader.read_cached() == {"value": 0}
    ctx = multiprocessing.get_context("spawn")
    for value in (1, 2, 3):
        w = ctx.Process(target=_writer, args=(str(p), value))
        w.start()
        w.join(60)
        assert w.exitcode == 0
        assert reader.read_cached() == {"value": value}
