"""Atomic, durable, locked JSON state files.

statefile makes the JSON files a service keeps its state in safe: a write is atomic
(readers in any process see the complete old or the complete new version) and durable
(synced, directory included, before it returns); a read-modify-write holds the
document's lock, so concurrent threads and processes never lose each other's updates; a
crash at any instant leaves a complete version; a damaged file can be read from, and
repaired with, its backup. The files stay plain JSON that any program can read.

Every file operation is done by the statefile Rust library, with the GIL released while
it reads, writes, syncs or waits for a lock: Python writers, Rust writers, the
``statefile`` command and the HTTP service all take the same locks and exclude each
other.

    import statefile

    doc = statefile.Doc("view/resData.json", create_dirs=True)
    with doc.update(default=dict) as data:       # locked; written on a clean exit
        data.setdefault("cases", []).append({"id": 7})
    doc.update(lambda data: data["cases"].append({"id": 8}))
    value, version = doc.read_versioned()
    doc.write_if(version, value)                 # compare-and-swap: Conflict if it changed

Several documents at once (journal mode: ``statefile.enable_journal(root)``, once per
store, on disk)::

    store = statefile.Store("state")

    def move(tx: statefile.Transaction) -> int:
        queue = tx.read("queue.json", default=[])
        job = queue.pop(0)
        tx.write("queue.json", queue)
        tx.write(f"jobs/{job}.json", {"id": job, "state": "running"})
        return job

    job, receipt = store.transaction(move)       # all or nothing, even across a crash

``fn`` may run more than once (documents are locked in one global order; one that
sorts before a document already locked makes the attempt start again), so it must
only compute and read and write through ``tx``. ``store.read_tx(names)`` reads several
documents as one consistent state; ``store.apply(ops)`` takes the operations of
``statefile tx``.

Threads: every call releases the GIL while it waits, so other threads run.
``asyncio``: call it through ``await asyncio.to_thread(doc.write, value)`` (the event
loop must not wait for a disk sync or a lock). ``multiprocessing``: handles can be
created in any process (fork or spawn); a forked child makes its own lock queues, helper
threads and journal handles (a lock a parent thread holds at the fork stays the
parent's: the child waits for it as another process would).
"""

from __future__ import annotations

from typing import Any, Union
import os

from . import atomicwrites
from ._statefile import (
    Doc,
    Store,
    Transaction,
    Update,
    _after_fork_in_child,
    _read_json,
    checkpoint,
    disable_journal,
    enable_journal,
    journal_status,
    recover,
    verify,
    write_json,
)
from ._types import (
    Backup,
    CheckpointReport,
    JournalStatus,
    TxOpResult,
    Conflict,
    Corrupt,
    Deadlock,
    Deleted,
    Durability,
    Error,
    InvalidName,
    IoError,
    LockTimeout,
    NoSpace,
    NotApplicable,
    NotFound,
    PermissionDenied,
    Receipt,
    Recovered,
    SerializeError,
    TxDocument,
    TxReceipt,
    Versioned,
)

# A child of os.fork() (multiprocessing's default on Linux, gunicorn's workers) makes its
# own lock queues, helper threads and journal handles: its parent's copies may have a
# mutex held by a thread that the child does not have, and their flock locks are the
# parent's (a journal written by both through them would be damaged).
os.register_at_fork(after_in_child=_after_fork_in_child)

__all__ = [
    "Backup",
    "CheckpointReport",
    "JournalStatus",
    "TxOpResult",
    "Conflict",
    "Corrupt",
    "Deadlock",
    "Deleted",
    "Doc",
    "Durability",
    "Error",
    "InvalidName",
    "IoError",
    "LockTimeout",
    "NoSpace",
    "NotApplicable",
    "NotFound",
    "PermissionDenied",
    "Receipt",
    "Recovered",
    "SerializeError",
    "Store",
    "Transaction",
    "TxDocument",
    "TxReceipt",
    "Update",
    "Versioned",
    "atomicwrites",
    "checkpoint",
    "disable_journal",
    "enable_journal",
    "journal_status",
    "read_json",
    "recover",
    "verify",
    "write_json",
]

_MISSING: Any = object()


def read_json(path: Union[str, "os.PathLike[str]"], default: Any = _MISSING) -> Any:
    """Read and parse the JSON document at ``path``.

    If it does not exist, return ``default`` when one is given (``None`` included),
    otherwise raise ``NotFound``. A damaged document raises ``Corrupt``.
    """
    try:
        return _read_json(path)
    except NotFound:
        if default is _MISSING:
            raise
        return default
