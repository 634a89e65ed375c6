"""The field reports' own scenarios, with real threads and real processes
(multiprocessing, fork and spawn) and real SIGKILLs."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import statefile
from conftest import temps


def create_case_run(store_root: str, case: dict[str, Any]) -> None:
    """What the case-run API's createCaseRun does to view/resData.json."""
    doc = statefile.Store(store_root).doc("view/resData.json")
    with doc.update(default=dict) as data:
        data.setdefault("cases", []).append(case)


def test_ten_simultaneous_create_case_runs_keep_all_ten(tmp_path: Path) -> None:
    barrier = threading.Barrier(10)

    def request(i: int) -> None:
        barrier.wait()
        create_case_run(str(tmp_path), {"id": i, "name": f"case {i}"})

    with ThreadPoolExecutor(10) as pool:
        list(pool.map(request, range(10)))
    cases = statefile.read_json(tmp_path / "view" / "resData.json")["cases"]
    assert sorted(c["id"] for c in cases) == list(range(10))


def _appender(root: str, who: str, n: int, threads: int) -> None:
    def run(t: int) -> None:
        doc = statefile.Store(root, lock_timeout=300).doc("view/resData.json")
        for i in range(n):
            if i % 2:
                with doc.update(default=dict) as data:
                    data.setdefault("cases", []).append(f"{who}-{t}-{i}")
            else:
                doc.update(lambda d: d.setdefault("cases", []).append(f"{who}-{t}-{i}"), default=dict)

    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_thousand_appends_from_threads_and_processes_none_lost_none_twice(
    tmp_path: Path, method: str
) -> None:
    # 1,000 appends: 4 processes x 2 threads x 75, plus 400 from 4 threads here.
    ctx = multiprocessing.get_context(method)
    procs = [
        ctx.Process(target=_appender, args=(str(tmp_path), f"p{p}", 75, 2)) for p in range(4)
    ]
    for p in procs:
        p.start()
    _appender(str(tmp_path), "main", 100, 4)
    for p in procs:
        p.join(600)
        assert p.exitcode == 0
    cases = statefile.read_json(tmp_path / "view" / "resData.json")["cases"]
    expected = [f"p{p}-{t}-{i}" for p in range(4) for t in range(2) for i in range(75)]
    expected += [f"main-{t}-{i}" for t in range(4) for i in range(100)]
    assert len(expected) == 1000
    assert len(cases) == len(set(cases)) == 1000, "an append was lost or applied twice"
    assert sorted(cases) == sorted(expected)
    assert temps(tmp_path) == []


ROWS = [{"row": i, "value": f"{i:06d}-" + "x" * 40} for i in range(14_000)]


def job_document(seq: int) -> dict[str, Any]:
    """About 1 MB: a job runner's status with its rows; seq at both ends, so a torn or
    mixed file cannot pass for a version."""
    return {"job": "csv-import", "seq": seq, "status": "running", "rows": ROWS, "end_seq": seq}


def _job_runner(path: str, start: int, started: Any, cycle: Any) -> None:
    doc = statefile.Doc(path)
    seq = start
    while True:
        t = time.monotonic()
        doc.write(job_document(seq))
        if not started.is_set():
            cycle.value = time.monotonic() - t
            started.set()
        seq += 1


def test_sigkill_mid_write_200_times_always_leaves_a_version_that_was_written(tmp_path: Path) -> None:
    p = tmp_path / "jobs" / "job-1.json"
    p.parent.mkdir()
    statefile.Doc(p).write(job_document(0))
    size = p.stat().st_size
    assert size > 1_000_000
    ctx = multiprocessing.get_context("fork")
    rng = random.Random(1)
    dead_temps: set[str] = set()
    mid_write = 0
    current = 0
    for kill in range(200):
        # Each child writes seqs from its own range, so what survives says who wrote it.
        next_seq = (kill + 1) * 1_000_000
        started, cycle = ctx.Event(), ctx.Value("d", 0.0)
        child = ctx.Process(target=_job_runner, args=(str(p), next_seq, started, cycle))
        child.start()
        assert started.wait(60), "the job runner never wrote"
        # Anywhere in the next writes: converting, serializing, syncing, renaming.
        time.sleep(rng.uniform(0, 1.5 * cycle.value))
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(60)
        assert child.exitcode == -signal.SIGKILL
        # Plain json.load, as the job runner's UI would: always complete, and exactly one
        # of the versions written (its content matches its seq).
        with open(p) as f:
            got = json.load(f)
        assert got == job_document(got["seq"]), f"kill {kill}: a torn or mixed document"
        # The version before, or one this child wrote: never an older one (each write
        # was durable before the next began).
        assert got["seq"] == current or next_seq <= got["seq"] < next_seq + 1_000_000
        current = got["seq"]
        now = set(temps(tmp_path))
        mid_write += bool(now - dead_temps)  # this kill left a temp: it hit a write
        dead_temps |= now
    # The next open cleans the dead writers' temp files.
    store = statefile.Store(tmp_path)
    assert temps(tmp_path) == []
    assert len([f for f in store.recovery["findings"] if f["problem"] == "stale-temp"]) == len(dead_temps)
    assert store.recovery["documents"] == 1
    assert statefile.verify(tmp_path)["healthy"]
    # Many kills landed inside a write (after the temp was created, before the rename).
    assert mid_write >= 20, f"only {mid_write} of 200 kills hit a write"
