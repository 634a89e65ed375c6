"""statefile.atomicwrites: a drop-in for the atomicwrites package (1.4.1), compared
with the real one installed beside it."""

from __future__ import annotations

import errno
import inspect
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import statefile.atomicwrites as ours
from conftest import skip_or_fail

try:
    import atomicwrites as real
except ImportError:  # pragma: no cover - test.d/20-python.sh installs it
    real = None

API = ["atomic_write", "replace_atomic", "move_atomic", "AtomicWriter"]
METHODS = ["__init__", "open", "_open", "get_fileobject", "sync", "commit", "rollback"]


def need_real() -> ModuleType:
    if real is None:
        skip_or_fail("the atomicwrites package is not installed")
    assert real is not None
    return real


def test_the_public_api_and_its_signatures_and_defaults_match() -> None:
    orig = need_real()
    assert ours.DEFAULT_MODE == orig.DEFAULT_MODE == "w"
    for name in API:
        assert hasattr(ours, name), name
    for name in ["atomic_write", "replace_atomic", "move_atomic"]:
        a, b = inspect.signature(getattr(ours, name)), inspect.signature(getattr(orig, name))
        assert [(p.name, p.kind, p.default) for p in a.parameters.values()] == [
            (p.name, p.kind, p.default if p.default is not orig.AtomicWriter else ours.AtomicWriter)
            for p in b.parameters.values()
        ], name
    for m in METHODS:
        a, b = (inspect.signature(getattr(mod.AtomicWriter, m)) for mod in (ours, orig))
        assert [(p.name, p.kind, p.default) for p in a.parameters.values()] == [
            (p.name, p.kind, p.default) for p in b.parameters.values()
        ], m


@pytest.mark.parametrize("mod_name", ["ours", "real"])
def test_documented_behaviour_is_the_same_for_both(tmp_path: Path, mod_name: str) -> None:
    mod = ours if mod_name == "ours" else need_real()
    p = tmp_path / "out.txt"
    with mod.atomic_write(str(p)) as f:
        f.write("one")
    assert p.read_text() == "one"
    # overwrite=False (the default): FileExistsError after writing, target unchanged.
    with pytest.raises(FileExistsError) as e:
        with mod.atomic_write(str(p)) as f:
            f.write("two")
    assert e.value.errno == errno.EEXIST
    assert p.read_text() == "one"
    with mod.atomic_write(str(p), overwrite=True) as f:
        f.write("three")
    assert p.read_text() == "three"

    # The block raises: nothing replaced, that exception propagates, no temp left.
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with mod.atomic_write(str(p), overwrite=True) as f:
            f.write("half")
            raise Boom
    assert p.read_text() == "three"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temp, no lock, no backup

    with mod.atomic_write(str(tmp_path / "b.bin"), mode="wb") as f:
        f.write(b"\x00\xff")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    with mod.atomic_write(str(tmp_path / "l.txt"), encoding="latin-1") as f:
        f.write("é")
    assert (tmp_path / "l.txt").read_bytes() == b"\xe9"
    for mode, msg in [("a", "Appending"), ("x", "overwrite"), ("r", "only be written")]:
        with pytest.raises(ValueError, match=msg):
            mod.AtomicWriter(str(p), mode=mode)

    # A subclass choosing its own temp file, passed as writer_cls.
    class Suffixed(mod.AtomicWriter):  # type: ignore[misc,name-defined]
        def get_fileobject(self, **kwargs: Any) -> Any:
            return super().get_fileobject(suffix=".part", **kwargs)

    with mod.atomic_write(str(tmp_path / "s.txt"), writer_cls=Suffixed) as f:
        assert f.name.endswith(".part")
        f.write("s")
    assert (tmp_path / "s.txt").read_text() == "s"

    # The two functions.
    src = tmp_path / "src"
    src.write_text("moved")
    with pytest.raises(FileExistsError):
        mod.move_atomic(str(src), str(p))
    assert src.exists() and p.read_text() == "three"
    mod.move_atomic(str(src), str(tmp_path / "new.txt"))
    assert not src.exists() and (tmp_path / "new.txt").read_text() == "moved"
    src.write_text("replaced")
    mod.replace_atomic(str(src), str(p))
    assert not src.exists() and p.read_text() == "replaced"


def test_path_like_and_bytes_paths(tmp_path: Path) -> None:
    with ours.atomic_write(tmp_path / "a.txt") as f:
        f.write("a")
    with ours.atomic_write(os.fsencode(tmp_path / "b.txt")) as f:
        f.write("b")
    assert (tmp_path / "a.txt").read_text() == "a" and (tmp_path / "b.txt").read_text() == "b"


def test_what_statefile_adds_mode_kept_and_symlink_kept(tmp_path: Path) -> None:
    p = tmp_path / "servers.json"
    p.write_text("{}")
    os.chmod(p, 0o640)
    with ours.atomic_write(str(p), overwrite=True) as f:
        f.write('{"a": 1}')
    assert stat.S_IMODE(p.stat().st_mode) == 0o640
    if real is not None:  # the original leaves every file it writes at 0600
        with real.atomic_write(str(p), overwrite=True) as f:
            f.write('{"a": 2}')
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    # A new file: 0644 less the umask.
    with ours.atomic_write(str(tmp_path / "new.json")) as f:
        f.write("{}")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o644 & ~umask
    # A symlink stays a symlink; the file it points to is replaced.
    link = tmp_path / "link.json"
    link.symlink_to("servers.json")
    with ours.atomic_write(str(link), overwrite=True) as f:
        f.write('{"via": "link"}')
    assert link.is_symlink() and p.read_text() == '{"via": "link"}'


def test_a_source_in_another_directory_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src, dst = tmp_path / "a" / "tmp1", tmp_path / "b" / "out.txt"
    src.write_text("x")
    for f in (ours.replace_atomic, ours.move_atomic):
        with pytest.raises(ValueError, match="same directory"):
            f(str(src), str(dst))
    assert src.exists() and not dst.exists()
    # A symlinked target in another directory: the temp goes beside the real file.
    (tmp_path / "b" / "real.txt").write_text("old")
    (tmp_path / "a" / "link.txt").symlink_to(tmp_path / "b" / "real.txt")
    with ours.atomic_write(str(tmp_path / "a" / "link.txt"), overwrite=True) as f:
        f.write("new")
    assert (tmp_path / "b" / "real.txt").read_text() == "new"
    assert sorted(os.listdir(tmp_path / "a")) == ["link.txt", "tmp1"]


SCRIPT = textwrap.dedent(
    """
    import sys
    from statefile.atomicwrites import atomic_write
    with atomic_write(sys.argv[1], overwrite=True) as f:
        f.write("x" * 5000)
    """
)


def test_the_commit_syncs_the_file_then_renames_then_syncs_the_directory(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        skip_or_fail("strace is not installed")
    target = tmp_path / "state.json"
    out = subprocess.run(
        ["strace", "-f", "-e", "trace=openat,openat2,fsync,fdatasync,rename,renameat,renameat2",
         sys.executable, "-c", SCRIPT, str(target)],
        capture_output=True, text=True, check=True,
    )
    lines = [l for l in out.stderr.splitlines() if str(tmp_path) in l or "fsync" in l or "rename" in l]
    renames = [i for i, l in enumerate(lines) if "rename" in l and "state.json" in l]
    assert renames, out.stderr[-2000:]
    r = renames[-1]
    assert any("fsync" in l for l in lines[:r]), "the file is not synced before the rename"
    # The target's directory (held open through the write) is fsynced after the rename.
    dir_fds = {
        l.rsplit("=", 1)[1].strip()
        for l in lines[:r]
        if "O_DIRECTORY" in l and f'"{tmp_path}"' in l
    }
    assert dir_fds, "\n".join(lines)
    assert any(f"fsync({fd})" in l for fd in dir_fds for l in lines[r + 1 :]), "\n".join(lines)
    assert target.read_text() == "x" * 5000
