"""The README's Python example, as written there, runs and keeps every case."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

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
    (block,) = python_blocks()
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


def test_the_example_file_is_the_readme_example() -> None:
    example = (Path(__file__).resolve().parents[1] / "examples" / "case_run.py").read_text()
    (block,) = python_blocks()
    assert block.strip() in example
