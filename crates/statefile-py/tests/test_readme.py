"""The README's Python example, as written there, runs and keeps every case."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

import statefile

README = Path(__file__).resolve().parents[3] / "README.md"


def python_blocks() -> list[str]:
    blocks, current = [], None
    for line in README.read_text().splitlines():
        if current is None and line.strip() == "```python":
            current = []
        elif current is not None and line.strip() == "```":
            blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    block = python_blocks()[0]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, Any] = {}
        exec(compile(block, str(README), "exec"), scope)
        threads = [
            threading.Thread(target=scope["create_case_run"], args=({"id": i},)) for i in range(10)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert scope["create_case_run"]({"id": 10}) == 11
        cases = statefile.read_json("data/view/resData.json")["cases"]
        assert sorted(c["id"] for c in cases) == list(range(11))
    finally:
        os.chdir(cwd)


def test_the_readme_transaction_example_runs_as_written(tmp_path: Path) -> None:
    _, block = python_blocks()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        scope: dict[str, Any] = {}
        exec(compile(block, str(README), "exec"), scope)
        store = scope["store"]
        store.doc("pending.json").write([1, 2])
        assert scope["start_next_job"]() == 1
        assert store.read_tx(["pending.json", "running/1.json"]) == [
            [2],
            {"id": 1, "state": "running"},
        ]
        assert scope["start_next_job"]() == 2
        assert scope["start_next_job"]() is None
        v2 = store.doc("running/2.json").version()
        with pytest.raises(statefile.Conflict):
            scope["finish"](1, v2)  # running/1.json is not at that version
        assert store.doc("running/1.json").exists() and not store.doc("done.json").exists()
        scope["finish"](2, v2)
        assert not store.doc("running/2.json").exists()
        assert store.doc("done.json").read() == [2]
        assert statefile.journal_status("queue") is not None
    finally:
        os.chdir(cwd)


def test_the_example_files_are_the_readme_examples() -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    case_run, job_queue = python_blocks()
    assert case_run.strip() in (examples / "case_run.py").read_text()
    assert job_queue.strip() in (examples / "job_queue.py").read_text()
