"""Shared helpers for the statefile package's tests.

These tests run against the installed wheel (test.d/20-python.sh builds it), with real
processes, real signals and a real tmpfs; nothing is mocked.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest


def skip_or_fail(why: str) -> None:
    """A test that cannot run here: under CI=true that is a failure, elsewhere a skip."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"cannot run under CI=true: {why}")
    pytest.skip(why)


def wait_child(pid: int, seconds: float) -> int | None:
    """The child's exit code, or None (killed) if it did not end in time."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.02)


def temps(d: Path) -> list[str]:
    """statefile temp files left in d (recursively)."""
    return sorted(
        str(p.relative_to(d)) for p in d.rglob("*") if ".sf-" in p.name and p.name.endswith(".tmp")
    )


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 256 KiB tmpfs, for a real ENOSPC (needs root and mount(2))."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if os.geteuid() != 0:
        skip_or_fail("mounting a tmpfs needs root")
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        skip_or_fail(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
