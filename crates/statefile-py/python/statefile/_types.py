"""Exceptions and result records of the statefile package.

The native module builds these (errors from the library's error kinds, receipts from
its receipts); they are plain Python classes so that the exceptions can also derive
from the standard ones a program already catches, and so that they pickle across
``multiprocessing``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Optional, TypedDict


def _rebuild(cls: type[Error], message: str, state: dict[str, Any]) -> Error:
    return cls(message, **state)


class Error(Exception):
    """Any error from statefile. Every message names the file and the operation.

    Attributes:
        message: the message, naming the file and what was being done.
        kind: the library's error kind (``"not-found"``, ``"corrupt"``, ``"conflict"``,
            ``"lock-timeout"``, ``"no-space"``, ``"permission-denied"``,
            ``"invalid-name"``, ``"durability"``, ``"serialize"``, ``"io"``); the same
            names as the CLI's ``--json`` output and the HTTP problem types. The
            package's own: ``"not-applicable"``, ``"deadlock"``.
        path: the file concerned, when there is one.
        version: for ``Conflict``, the version found; for ``Durability``, the version
            that was renamed into place but may not survive a power loss.
    """

    kind: str = "io"

    def __init__(
        self,
        message: str,
        *,
        kind: Optional[str] = None,
        path: Optional[str] = None,
        version: Optional[str] = None,
        errno: Optional[int] = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        self.path = path
        self.version = version
        if isinstance(self, OSError) and errno is not None:
            os_error: OSError = self
            os_error.errno = errno
            os_error.strerror = os.strerror(errno)
        for name, value in details.items():
            setattr(self, name, value)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt through __init__ (OSError's own pickling would pass errno and
        # strerror positionally), so exceptions cross multiprocessing intact.
        state = {k: v for k, v in self.__dict__.items() if k != "message"}
        if isinstance(self, OSError):
            state["errno"] = self.errno
        return (_rebuild, (type(self), self.message, state))


class NotFound(Error, FileNotFoundError):
    """The document (or the backup asked for) does not exist."""

    kind = "not-found"


class Corrupt(Error):
    """The document is not valid JSON (empty, truncated, garbage) and no fallback was
    asked for or possible.

    Attributes:
        line, column: where parsing failed (0, 0 for an empty file).
        reason: what the parser said.
        backup_exists: whether a backup exists (``Doc(..., fallback=True)`` reads it,
            ``Store.recover()`` restores it).
    """

    kind = "corrupt"
    line: int = 0
    column: int = 0
    reason: str = ""
    backup_exists: bool = False


class Conflict(Error):
    """A compare-and-swap found another version (``.version``), or ``create`` found
    the document already there."""

    kind = "conflict"


class LockTimeout(Error, TimeoutError):
    """Another writer held the document's lock longer than ``lock_timeout``."""

    kind = "lock-timeout"


class NoSpace(Error, OSError):
    """The file system is full or the quota is exhausted (ENOSPC, EDQUOT). The
    document is unchanged."""

    kind = "no-space"


class PermissionDenied(Error, PermissionError):
    """The operating system refused (EACCES, EPERM, EROFS). The document is unchanged."""

    kind = "permission-denied"


class InvalidName(Error, ValueError):
    """The path or name is not one statefile will store a document under (or a
    version string is malformed)."""

    kind = "invalid-name"


class Durability(Error, OSError):
    """The new version was renamed into place, but syncing its directory failed: it
    is visible now (``.version``), yet may not survive a power loss."""

    kind = "durability"


class SerializeError(Error, ValueError):
    """The value cannot be stored or read as asked."""

    kind = "serialize"


class NotApplicable(Error, ValueError):
    """A patch or append of ``Store.apply`` that does not apply to the document as it
    is (a JSON Patch ``test`` that fails, a pointer to something that is not an
    array). Nothing was written."""

    kind = "not-applicable"


class Deadlock(Error):
    """A call from inside the function of ``Store.transaction`` that would wait for a
    lock that transaction holds (a ``Doc`` write, delete, restore or update of a
    document ``tx`` has locked, or a nested transaction, ``read_tx`` or ``apply`` that
    needs it): it would wait until its lock timeout while the transaction waits for
    it, so it fails at once instead. Use ``tx`` for those documents. Nothing was
    written."""

    kind = "deadlock"


class IoError(Error, OSError):
    """Any other I/O failure. ``errno`` is the OS error when there is one."""

    kind = "io"


@dataclass(frozen=True)
class Recovered:
    """How a fallback read recovered from a damaged document."""

    backup: int
    """The backup the value came from (1 = newest)."""
    path: str
    """That backup's path."""
    damaged_version: str
    """The version of the damaged document."""
    reason: str
    """What was wrong with it."""


class _VersionedTuple(NamedTuple):
    value: Any
    version: str


class Versioned(_VersionedTuple):
    """A value and the version it was read at: ``value, version = doc.read_versioned()``.

    ``recovered`` is set when the document was damaged and the value came from a
    backup (only with ``fallback=True``).
    """

    recovered: Optional[Recovered] = None


@dataclass(frozen=True)
class Receipt:
    """What a write did."""

    path: str
    """The file written (symlinks resolved)."""
    version: str
    """The version now on disk (the SHA-256 of its bytes, as ``sha256sum`` prints it)."""
    previous: Optional[str]
    """The version it replaced, if there was one and it was read."""
    bytes: int
    """Bytes written."""
    durability: str
    """What a power loss right now would leave: ``"full"``, ``"data"`` or ``"none"``."""
    backup: Optional[str]
    """Where the replaced version was kept (``.name.bak``), if a backup was made."""
    created: bool
    """True when the document did not exist before."""
    unchanged: bool
    """True when the new bytes equalled the old ones (still replaced and synced)."""
    lock_wait: float
    """Seconds spent waiting for the document's lock."""
    batch: int
    """How many calls this write answered: concurrent writes of one document in one
    process share one durable write (group commit), and each gets this same receipt."""
    queued: float
    """Seconds this call waited in the document's queue before its write began."""


@dataclass(frozen=True)
class Deleted:
    """What ``Doc.delete`` did."""

    version: str
    """The version that was deleted."""
    kept_as: Optional[str]
    """Where it went: ``.name.bak`` (restorable), ``.name.corrupt``, or None when
    backups are off and it was unlinked."""


@dataclass(frozen=True)
class Backup:
    """One kept previous version of a document."""

    number: int
    """1 for the newest, 2 for the one before, ..."""
    path: str
    version: str
    size: int
    modified: float
    """When that version was written (seconds since the epoch)."""
    parses: bool
    """Whether it is valid JSON (a backup that does not parse is never restored)."""


@dataclass(frozen=True)
class TxDocument:
    """What a committed transaction did to one document."""

    name: str
    """The document's name in the store, as the transaction named it."""
    path: str
    """Its path (symlinks resolved)."""
    version: Optional[str]
    """Its new version; None when the transaction deleted it."""
    previous: Optional[str]
    """The version it replaced; None when it did not exist."""


@dataclass(frozen=True)
class TxReceipt:
    """What ``Store.transaction`` committed: one ``TxDocument`` per document written or
    deleted, in the order of their paths (none for a transaction that only read)."""

    documents: tuple[TxDocument, ...]

    @property
    def versions(self) -> dict[str, Optional[str]]:
        """Each changed document's new version by name (None: deleted)."""
        return {d.name: d.version for d in self.documents}


class PendingDocument(TypedDict):
    """A document whose file is not yet what its last journal record says."""

    path: str
    version: Optional[str]
    in_flight: bool


class JournalDamage(TypedDict):
    """Damage before the journal's end (writes in the tree are refused)."""

    lsn: int
    reason: str
    later_records: int


class JournalStatus(TypedDict):
    """A journal's state, as ``statefile journal status --json`` prints it."""

    root: str
    path: str
    format_version: int
    swap: bool
    capacity: int
    checkpoint_lsn: int
    end_lsn: int
    records: int
    in_flight: int
    to_replay: list[PendingDocument]
    damage: Optional[JournalDamage]
    # A sync of a file only the journal may hold failed and it could not be rewritten:
    # checkpoints are refused until ``recover()`` rewrites the files the journal holds.
    sync_failed: bool
    needs_repair: bool


class CheckpointReport(TypedDict):
    """What a checkpoint (or ``disable_journal``) did."""

    freed: int
    documents: int
    directories: int
    adopted: int


class _TxOpResult(TypedDict):
    doc: str
    op: Literal["put", "patch", "append", "delete", "get"]
    version: Optional[str]


class TxOpResult(_TxOpResult, total=False):
    """What one operation of ``Store.apply`` did, as ``statefile tx`` prints it:
    ``value`` for a get, ``index`` for an append."""

    value: Any
    index: int
