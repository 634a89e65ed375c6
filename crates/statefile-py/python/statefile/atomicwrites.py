"""A drop-in replacement for the ``atomicwrites`` package (1.4.1, unmaintained).

Change one line::

    from atomicwrites import atomic_write            # before
    from statefile.atomicwrites import atomic_write  # after

The public API, its signatures and defaults are those of ``atomicwrites``:
``atomic_write``, ``AtomicWriter`` (``open``, ``get_fileobject``, ``sync``, ``commit``,
``rollback``), ``replace_atomic`` and ``move_atomic``. As there, the block writes a temp
file beside the target (``tempfile.mkstemp``: ``O_EXCL``, mode 0600), nothing is
replaced when the block raises (the temp is removed and the block's exception
propagates), ``overwrite=False`` (the default) raises ``FileExistsError`` (``EEXIST``)
if the target exists, and no file is left beside the target: no lock, no backup (in a
store in journal mode, the commit takes the document's lock, whose file stays, and
records the replace in the journal, so that no replay brings an older version back).

What changes is the commit: it goes through statefile's replace protocol
(``statefile::replace_file`` / ``move_file`` in the Rust library), which also

- keeps the replaced file's mode and owner (``atomicwrites`` leaves every file it
  writes at 0600); a new file gets 0644 less the umask, as a new statefile document;
- syncs the file and the directory of the target (and of the temp, if another);
- replaces the file a symlink points to, keeping the link (``atomicwrites`` replaces
  the link itself with a regular file);
- refuses to replace a file this process may not write (``PermissionError``).

One difference: the temp file must be in the directory of the (resolved) target, which
is where ``get_fileobject`` puts it unless told otherwise. ``replace_atomic`` and
``move_atomic`` with a source in another directory raise ``statefile.InvalidName`` (a
``ValueError``) and change nothing, where ``atomicwrites`` accepted any directory on
the same file system: the replace goes through one handle on the target's directory.

``sync()`` only flushes Python's buffers: the file's fsync happens once, in
``commit()``, through statefile. The module does not lock: concurrent writers of one
file each replace it whole, the last one wins, as with ``atomicwrites``. For locked
read-modify-write use ``statefile.Doc.update``.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from typing import IO, Any, Callable, Iterator, Union

from ._statefile import _move_file, _replace_file
from ._types import Conflict

__version__ = "1.4.1"
"""The version of the ``atomicwrites`` API this module reproduces."""

DEFAULT_MODE = "w"

_Path = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]


def _name(p: _Path) -> str:
    return os.fsdecode(os.fspath(p))


def replace_atomic(src: _Path, dst: _Path) -> None:
    """
    Move ``src`` to ``dst``. If ``dst`` exists, it will be silently
    overwritten.

    Both paths must reside on the same filesystem for the operation to be
    atomic.
    """
    _replace_file(_name(src), _name(dst))


def move_atomic(src: _Path, dst: _Path) -> None:
    """
    Move ``src`` to ``dst``. There might a timewindow where both filesystem
    entries exist. If ``dst`` already exists, :py:exc:`FileExistsError` will be
    raised.

    Both paths must reside on the same filesystem for the operation to be
    atomic.
    """
    try:
        _move_file(_name(src), _name(dst))
    except Conflict as e:
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), _name(dst)) from e


class AtomicWriter(object):
    """
    A helper class for performing atomic writes. Usage::

        with AtomicWriter(path).open() as f:
            f.write(...)

    :param path: The destination filepath. May or may not exist.
    :param mode: The filemode for the temporary file. This defaults to `w`.
    :param overwrite: If set to false, an error is raised if ``path`` exists.
        Errors are only raised after the file has been written to.  Either way,
        the operation is atomic.
    :param open_kwargs: Keyword-arguments to pass to the underlying
        :py:func:`open` call. This can be used to set the encoding when opening
        files in text-mode.

    If you need further control over the exact behavior, you are encouraged to
    subclass.
    """

    def __init__(
        self, path: _Path, mode: str = DEFAULT_MODE, overwrite: bool = False, **open_kwargs: Any
    ) -> None:
        if "a" in mode:
            raise ValueError(
                "Appending to an existing file is not supported, because that "
                "would involve an expensive `copy`-operation to a temporary "
                "file. Open the file in normal `w`-mode and copy explicitly "
                "if that's what you're after."
            )
        if "x" in mode:
            raise ValueError("Use the `overwrite`-parameter instead.")
        if "w" not in mode:
            raise ValueError("AtomicWriters can only be written to.")

        self._path = os.fspath(path)
        self._mode = mode
        self._overwrite = overwrite
        self._open_kwargs = open_kwargs

    def open(self) -> contextlib.AbstractContextManager[IO[Any]]:
        """
        Open the temporary file.
        """
        return self._open(self.get_fileobject)

    @contextlib.contextmanager
    def _open(self, get_fileobject: Callable[..., IO[Any]]) -> Iterator[IO[Any]]:
        f = None  # make sure f exists even if get_fileobject() fails
        try:
            success = False
            with get_fileobject(**self._open_kwargs) as f:
                yield f
                self.sync(f)
            self.commit(f)
            success = True
        finally:
            if not success:
                try:
                    # As in atomicwrites: None if get_fileobject() failed.
                    self.rollback(f)  # type: ignore[arg-type]
                except Exception:
                    pass

    def get_fileobject(
        self,
        suffix: str = "",
        prefix: str = tempfile.gettempprefix(),
        dir: Union[str, None] = None,
        **kwargs: Any,
    ) -> IO[Any]:
        """Return the temporary file to use."""
        if dir is None:
            # Beside the file the path resolves to (through symlinks): that is the
            # directory the commit renames in.
            dir = os.path.dirname(os.path.realpath(_name(self._path)))
        descriptor, name = tempfile.mkstemp(suffix=suffix, prefix=prefix, dir=dir)
        # io.open() will take either the descriptor or the name, but we need
        # the name later for commit()/replace_atomic() and couldn't find a way
        # to get the filename from the descriptor.
        os.close(descriptor)
        kwargs["mode"] = self._mode
        kwargs["file"] = name
        f: IO[Any] = io.open(**kwargs)
        return f

    def sync(self, f: IO[Any]) -> None:
        """responsible for clearing as many file caches as possible before
        commit: flushes Python's buffers; commit() syncs the file to disk."""
        f.flush()

    def commit(self, f: IO[Any]) -> None:
        """Move the temporary file to the target location."""
        if self._overwrite:
            replace_atomic(f.name, self._path)
        else:
            move_atomic(f.name, self._path)

    def rollback(self, f: IO[Any]) -> None:
        """Clean up all temporary resources."""
        os.unlink(f.name)


def atomic_write(
    path: _Path, writer_cls: type[AtomicWriter] = AtomicWriter, **cls_kwargs: Any
) -> contextlib.AbstractContextManager[IO[Any]]:
    """
    Simple atomic writes. This wraps :py:class:`AtomicWriter`::

        with atomic_write(path) as f:
            f.write(...)

    :param path: The target path to write to.
    :param writer_cls: The writer class to use. This parameter is useful if you
        subclassed :py:class:`AtomicWriter` to change some behavior and want to
        use that new subclass.

    Additional keyword arguments are passed to the writer class. See
    :py:class:`AtomicWriter`.
    """
    return writer_cls(path, **cls_kwargs).open()
