"""Private copies of database files, for the offline tools.

``fame inspect``, ``dump`` and ``check`` must never change a byte of a
storage directory, yet a stopped node may have left a ``-wal`` file that
holds committed transactions (after a SIGKILL, or kept on purpose after a
full-disk shutdown). Opening the file itself would replay that ``-wal``
into it and delete it; opening it immutable would ignore it. So the tools
copy the ``.db`` and its non-empty ``-wal`` into a private (0700) temporary
directory, open the copy normally (SQLite replays the ``-wal`` there) and
remove the copy afterwards. The temporary directory is made by
:func:`tempfile.mkdtemp`, so ``TMPDIR`` chooses where (it needs room for a
copy of the files).

A running node holds each of its files with SQLite's exclusive lock (a
POSIX lock on the lock bytes at offset 1 GiB, see :func:`held_by`). A copy
taken meanwhile may catch a checkpoint half-way and look damaged, so the
tools refuse a held file with :class:`DatabaseInUse` instead of reading a
copy that may be behind or torn. They test for the lock without taking it,
before and after copying. The copy order (``.db`` then ``-wal``) is
consistent for a stopped node, which is the only case read.

POSIX locks belong to a process: a process does not see its own locks, and
closing any descriptor of a file drops all of them. So these functions are
for a process that does not hold the files open itself (the CLI).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import DatabaseInUse, StorageError

__all__ = ["held_by", "open_snapshot", "snapshot_directory", "wal_path"]

LOCK_BYTES_OFFSET = 0x40000000
"""SQLite's PENDING byte; RESERVED follows, then the 510 SHARED bytes."""
LOCK_BYTES = 512
_FLOCK = "hhqqi"  # struct flock on Linux: l_type, l_whence, l_start, l_len, l_pid


def wal_path(path: Path) -> Path:
    """The ``-wal`` file next to the database file ``path``."""
    return path.with_name(path.name + "-wal")


def held_by(path: Path) -> int | None:
    """The pid of the process holding a SQLite lock on ``path``, or ``None``.

    Asks the kernel (``F_GETLK``) whether a write lock on SQLite's lock
    bytes would conflict; that takes no lock and writes nothing. A node's
    store holds them for as long as the file is open (``locking_mode =
    EXCLUSIVE``). A missing file is held by no one.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, LOCK_BYTES_OFFSET, LOCK_BYTES, 0)
        kind, _whence, _start, _length, pid = struct.unpack(
            _FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, query)
        )
    finally:
        os.close(fd)
    return None if kind == fcntl.F_UNLCK else int(pid)


def _refuse_if_held(path: Path) -> None:
    pid = held_by(path)
    if pid is not None:
        raise DatabaseInUse(str(path), pid)


def _copy(path: Path, into: Path) -> Path:
    """Copy ``path`` and its non-empty ``-wal`` into ``into``; return the copy's path."""
    copy = into / path.name
    shutil.copyfile(path, copy)
    wal = wal_path(path)
    try:
        if wal.stat().st_size > 0:
            shutil.copyfile(wal, wal_path(copy))
    except FileNotFoundError:
        pass  # no -wal: everything is in the .db
    return copy


@contextmanager
def snapshot_directory(paths: Iterable[Path]) -> Iterator[Path]:
    """Copy each database file of ``paths`` (with its ``-wal``) into a private directory.

    Yields the directory, which holds the copies under the same names, and
    removes it afterwards. Raises :class:`DatabaseInUse` if a running node
    holds one of the files (checked before and after copying). The copies
    may be opened and written freely: the originals are only read.
    """
    paths = list(paths)
    for path in paths:
        _refuse_if_held(path)
    directory = Path(tempfile.mkdtemp(prefix="fame-snapshot-"))
    try:
        directory.chmod(0o700)  # mkdtemp makes it 0700; say so whatever the platform
        for path in paths:
            try:
                _copy(path, directory)
            except OSError as exc:
                raise StorageError(
                    f"cannot copy {path} for reading: {exc.strerror or exc}; nothing was changed"
                    " (the copy goes to TMPDIR, which needs room for the files)"
                ) from None
        for path in paths:
            # A node that started while we copied may have changed the files.
            _refuse_if_held(path)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def open_snapshot(path: Path) -> Iterator[Path]:
    """Copy the database file ``path`` and its ``-wal``; yield the copy's path.

    See :func:`snapshot_directory`; the copy has the same file name.
    """
    with snapshot_directory([path]) as directory:
        yield directory / path.name
