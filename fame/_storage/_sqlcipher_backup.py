"""SQLite's online backup API: copy a live database file, consistently.

The storage actor that owns a file runs :func:`copy_live` on its worker
thread, between two batches: no transaction of its own is open, and no
other process can write the file (it holds the file's exclusive lock), so
the copy is exactly the committed state at that moment, ``-wal`` included.
The copy gets the same key bytes as the source, so it opens with the same
master key under the same name. It is written under a temporary name,
fsynced, then renamed: a copy under the final name is always complete.
"""

from __future__ import annotations

import os
from pathlib import Path

import sqlcipher3

from ._backup_manifest import FileCopy, fsync_directory, fsync_file, sha256_of
from ._errors import StorageError
from ._namespace import ENCRYPTED_SUFFIX, PLAIN_SUFFIX

__all__ = ["copy_live", "remove_temporary"]

TMP_SUFFIX = ".tmp"
_SIDE_FILES = ("", "-journal", "-wal", "-shm")


def remove_temporary(path: Path) -> None:
    """Remove an unfinished copy of ``path`` (and SQLite's side files of it)."""
    for side in _SIDE_FILES:
        path.with_name(path.name + TMP_SUFFIX + side).unlink(missing_ok=True)


def _namespace_of(name: str) -> str:
    suffix = ENCRYPTED_SUFFIX if name.endswith(ENCRYPTED_SUFFIX) else PLAIN_SUFFIX
    return name.removesuffix(suffix)


def copy_live(
    conn: sqlcipher3.Connection, source: Path, directory: Path, key: bytes | None
) -> FileCopy:
    """Copy the database open on ``conn`` (the file ``source``) into ``directory``; blocking."""
    final = directory / source.name
    tmp = final.with_name(final.name + TMP_SUFFIX)
    remove_temporary(final)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    try:
        records = int(conn.execute("SELECT count(*) FROM kv").fetchone()[0])
        target = sqlcipher3.connect(str(tmp), isolation_level=None, check_same_thread=False)
        try:
            target.execute("PRAGMA cipher_log_level = NONE")
            if key is not None:
                target.execute(f"PRAGMA key = \"x'{key.hex()}'\"")
            # pages=-1: the whole file in one step (see StorageActor._backup).
            conn.backup(target, pages=-1)
        finally:
            target.close()
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_directory(directory)
    except sqlcipher3.DatabaseError as exc:
        remove_temporary(final)
        raise StorageError(
            f"backup of {source.name} into {directory} failed ({type(exc).__name__}: {exc});"
            " the source file was not changed"
        ) from None
    except BaseException:
        remove_temporary(final)
        raise
    return FileCopy(
        name=final.name,
        namespace=_namespace_of(final.name),
        bytes=final.stat().st_size,
        sha256=sha256_of(final),
        records=records,
    )
