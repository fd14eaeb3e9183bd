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
POSIX lock on the lock bytes at offset 1 GiB, see ``_file_lock``). A copy
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

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ._errors import DatabaseInUse, StorageError
from ._file_lock import file_holder

__all__ = ["open_snapshot", "snapshot_directory", "wal_path"]


def wal_path(path: Path) -> Path:
    """The ``-wal`` file next to the database file ``path``."""
    return path.with_name(path.name + "-wal")


def _refuse_if_held(path: Path) -> None:
    pid = file_holder(path)
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
