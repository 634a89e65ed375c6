"""Config files (the dashboard's servers.json): mode and owner kept across writes, no
temp left after a failed write, a full disk leaves the old version."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import statefile
from conftest import skip_or_fail, temps


def test_mode_0600_is_kept_across_writes_and_updates(tmp_path: Path) -> None:
    p = tmp_path / "servers.json"
    doc = statefile.Doc(p)
    doc.write({"servers": []})
    os.chmod(p, 0o600)
    doc.write({"servers": ["a"]})
    doc.update(lambda d: d["servers"].append("b"))
    with doc.update() as d:
        d["servers"].append("c")
    statefile.write_json(p, {"servers": ["d"]})
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / ".servers.json.bak").stat().st_mode) == 0o600


def test_owner_is_kept_when_root_rewrites_a_users_file(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        skip_or_fail("changing a file's owner needs root")
    p = tmp_path / "dashboard-layout.json"
    statefile.write_json(p, {"groups": []})
    os.chown(p, 65534, 65534)  # nobody:nogroup
    os.chmod(p, 0o640)
    statefile.Doc(p).update(lambda d: d["groups"].append("g1"))
    st = p.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o640)


def test_a_file_this_process_may_not_write_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "servers.json"
    statefile.write_json(p, {"servers": []})
    os.chmod(p, 0o444)
    if os.geteuid() == 0:
        # Root may write anything; drop to nobody in a child to see the refusal.
        os.chmod(tmp_path, 0o777)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                try:
                    statefile.Doc(p).write({"servers": ["x"]})
                except PermissionError as e:
                    code = 0 if isinstance(e, statefile.PermissionDenied) else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    else:
        with pytest.raises(statefile.PermissionDenied):
            statefile.Doc(p).write({"servers": ["x"]})
    assert statefile.read_json(p) == {"servers": []}
    assert temps(tmp_path) == []


def test_an_unserializable_value_leaves_no_temp_and_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "servers.json"
    statefile.write_json(p, {"servers": ["a"]})
    before = p.read_bytes()
    with pytest.raises(TypeError):
        statefile.write_json(p, {"servers": {"a", "b"}})
    assert p.read_bytes() == before
    assert temps(tmp_path) == []


def test_a_full_disk_leaves_the_old_version_and_no_temp(tiny_tmpfs: Path) -> None:
    p = tiny_tmpfs / "servers.json"
    doc = statefile.Doc(p, backups=0)
    doc.write({"servers": ["a"]})
    before = p.read_bytes()
    big = {"servers": ["x" * 1000 for _ in range(1000)]}  # ~1 MB: more than the disk
    with pytest.raises(statefile.NoSpace) as e:
        doc.write(big)
    assert isinstance(e.value, OSError) and e.value.errno == 28
    assert "servers.json" in str(e.value)
    assert p.read_bytes() == before
    assert temps(tiny_tmpfs) == []
    with pytest.raises(statefile.NoSpace):
        with doc.update() as d:
            d["servers"] = big["servers"]
    with pytest.raises(OSError):
        from statefile.atomicwrites import atomic_write

        with atomic_write(str(p), overwrite=True) as f:
            f.write("y" * 1_000_000)
    assert p.read_bytes() == before
    assert sorted(os.listdir(tiny_tmpfs)) == [".servers.json.lock", "servers.json"]
