"""Read-modify-write a statefile document from Python, interoperating with statefile.

This follows the lock and write protocol of docs/design.md: flock on the sidecar
`.name.lock`, a unique O_EXCL temp file beside the document, fsync, rename, fsync of the
directory. Rust writers, the `statefile` CLI and this module exclude each other.
The library's test suite runs this file (crates/statefile/tests/interop.rs).
"""

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import sys


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


@contextlib.contextmanager
def locked(path):
    """Hold the document's lock; yield the resolved (directory, name)."""
    d, name = os.path.split(os.path.realpath(path))
    lock = os.path.join(d, f".{name}.lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except FileNotFoundError:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        st, now = os.fstat(fd), os.stat(lock)
        if st.st_nlink > 0 and (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
            break
        os.close(fd)  # the holder deleted it with its document: take the new one
    try:
        yield d, name
    finally:
        os.close(fd)


def _replace(d, name, data):
    """The write protocol; the caller holds the lock. Returns the new version."""
    target = os.path.join(d, name)
    rand = base64.b32encode(os.urandom(10)).decode().lower()  # 16 chars of a-z2-7
    tmp = os.path.join(d, f".{name}.sf-{rand}.tmp")
    t = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            old = os.stat(target)
            os.fchmod(t, old.st_mode & 0o7777)
        except FileNotFoundError:
            os.fchmod(t, 0o644 & ~_umask())
        view = memoryview(data)
        while view:
            view = view[os.write(t, view):]
        os.fsync(t)
        os.close(t)
        t = None
        os.rename(tmp, target)
    except BaseException:
        if t is not None:
            os.close(t)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return hashlib.sha256(data).hexdigest()


def update(path, fn, default=None):
    """Locked read-modify-write: fn(value) returns the new value."""
    with locked(path) as (d, name):
        try:
            with open(os.path.join(d, name), "rb") as f:
                value = json.loads(f.read())
        except FileNotFoundError:
            value = default
        data = (json.dumps(fn(value), indent=2) + "\n").encode()
        return _replace(d, name, data)


if __name__ == "__main__":
    # python3 statefile_lock.py FILE TAG COUNT: append "TAG-i" to the array "items".
    path, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    for i in range(count):
        def push(v, i=i):
            v = v or {"items": []}
            v["items"].append(f"{tag}-{i}")
            return v
        update(path, push)
