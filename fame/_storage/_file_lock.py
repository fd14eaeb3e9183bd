"""Whether another process holds a database file open, asked without touching it.

Every storage actor keeps its file in SQLite's exclusive locking mode: a
POSIX lock on the file's lock bytes (at 1 GiB) for as long as the node
runs. ``F_GETLK`` asks whether a write lock on those bytes would conflict,
without taking any lock, opening the file read-only: nothing is changed and
the running node is not disturbed.
"""

from __future__ import annotations

import fcntl
import os
import struct
from pathlib import Path

__all__ = ["file_holder", "file_in_use", "files_in_use"]

_PENDING_BYTE = 0x40000000
_LOCK_BYTES = 512  # PENDING, RESERVED and the SHARED range
# struct flock on Linux: short l_type, short l_whence, off_t l_start, off_t l_len, pid_t l_pid.
_FLOCK = "hhqqi4x"


def file_in_use(path: Path) -> bool:
    """True if another process holds a SQLite lock on ``path``."""
    return file_holder(path) is not None


def file_holder(path: Path) -> int | None:
    """The pid of the process holding a SQLite lock on ``path``, or ``None``."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        query = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _PENDING_BYTE, _LOCK_BYTES, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    kind, _whence, _start, _length, pid = struct.unpack(_FLOCK, answer)
    return None if kind == fcntl.F_UNLCK else int(pid)


def files_in_use(directory: Path) -> list[Path]:
    """The database files in ``directory`` another process holds."""
    if not directory.is_dir():
        return []
    return [p for p in sorted(directory.iterdir()) if p.name.endswith(".db") and file_in_use(p)]
