"""The drop-in atomicwrites module in a journal tree (found by a hostile test): its
commits went around the journal, so a replay (a recover, or the recovery after a
reboot) brought the journal's older version of the document back over them."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import statefile
from statefile.atomicwrites import atomic_write, move_atomic


def run(code: str, *args: str) -> str:
    """Run `code` in a fresh Python process (its own journal handles), return stdout."""
    r = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def invalidate_shared_state(root: Path) -> None:
    """What a reboot does to the journal's shared state (never synced): it is no
    longer valid, so the next process to open the journal replays it from the records
    since the checkpoint (docs/design.md, "Recovery and replay")."""
    shm = root / ".statefile" / "journal-shm"
    shm.write_bytes(b"\0" * shm.stat().st_size)


def test_an_atomicwrites_commit_in_a_journal_tree_is_not_rolled_back_by_recover(
    tmp_path: Path,
) -> None:
    statefile.enable_journal(tmp_path, capacity=1 << 20)
    servers = tmp_path / "servers.json"
    statefile.Doc(servers).write({"v": "A"})
    with atomic_write(str(servers), overwrite=True) as f:
        f.write(json.dumps({"v": "B"}))
    assert statefile.read_json(servers) == {"v": "B"}
    statefile.recover(tmp_path)
    assert json.loads(servers.read_text()) == {"v": "B"}, "recover rolled back a committed write"


def test_an_atomicwrites_commit_in_a_journal_tree_survives_the_replay_after_a_reboot(
    tmp_path: Path,
) -> None:
    statefile.enable_journal(tmp_path, capacity=1 << 20)
    run(
        """
        import json, sys, statefile
        from statefile.atomicwrites import atomic_write
        p = sys.argv[1] + "/servers.json"
        statefile.Doc(p).write({"v": "A"})
        with atomic_write(p, overwrite=True) as f:   # synced and renamed: durable
            f.write(json.dumps({"v": "B"}))
        """,
        str(tmp_path),
    )
    invalidate_shared_state(tmp_path)
    out = run(
        "import sys, statefile; print(statefile.read_json(sys.argv[1] + '/servers.json'))",
        str(tmp_path),
    )
    assert out.strip() == "{'v': 'B'}", f"the replay rolled the document back: {out!r}"
    assert json.loads((tmp_path / "servers.json").read_text()) == {"v": "B"}


def test_a_move_atomic_to_a_deleted_documents_name_is_not_deleted_by_recover(
    tmp_path: Path,
) -> None:
    statefile.enable_journal(tmp_path, capacity=1 << 20)
    (tmp_path / "jobs").mkdir()
    job = statefile.Doc(tmp_path / "jobs" / "1.json")
    job.write({"state": "old"})
    job.delete()
    src = tmp_path / "jobs" / "new.tmp"
    src.write_text(json.dumps({"state": "new"}))
    move_atomic(str(src), str(tmp_path / "jobs" / "1.json"))
    statefile.recover(tmp_path)
    assert (tmp_path / "jobs" / "1.json").exists(), "recover deleted a document moved in place"
    assert statefile.read_json(tmp_path / "jobs" / "1.json") == {"state": "new"}



def test_an_atomic_write_of_a_document_inside_its_own_update_is_deadlock_at_once(
    tmp_path: Path,
) -> None:
    # In a journal tree the commit takes the document's lock, which the update on this
    # thread holds: it would wait for itself until the lock timeout. Refused at once,
    # as a write of the document from inside its update is, and nothing is written.
    statefile.enable_journal(tmp_path, capacity=1 << 20)
    servers = tmp_path / "servers.json"
    doc = statefile.Doc(servers, lock_timeout=30)
    doc.write({"v": "A"})
    start = time.monotonic()
    with pytest.raises(statefile.Deadlock, match="servers.json"):
        with doc.update() as data:
            data["v"] = "C"
            with atomic_write(str(servers), overwrite=True) as f:
                f.write(json.dumps({"v": "B"}))
    assert time.monotonic() - start < 5
    assert statefile.read_json(servers) == {"v": "A"}
