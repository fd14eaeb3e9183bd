"""Re-encrypt database files under another key, crash-safe and with nothing lost.

Two users: the provider migrates a directory's v1 files (key without salt,
see ``_keys``) to the salted v2 scheme when it opens the directory, and
``fame rekey`` re-encrypts every file under a new master key.

One file at a time, never in place:

1. open the file with its current key, checkpoint its ``-wal`` into it (so
   the file alone holds every committed transaction) and close it, which
   removes the ``-wal``;
2. copy it with ``sqlcipher_export`` into ``<name>.rekey-tmp`` under the new
   key, fsync that file;
3. ``os.replace`` it over the original, fsync the directory.

A crash before step 3 leaves the original whole (the copy is a separate
file, deleted by the next run); a crash after it leaves the new file
whole. ``os.replace`` is atomic, so there is no moment at which the name
holds a partly written file or nothing: every file opens with its old key
or its new key, and which one is told by probing page 1 with each.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import attrs

from ._errors import DamagedDatabase, DatabaseInUse, StorageError, WrongMasterKey
from ._keys import MasterKey, find_file_key, salted_file_key
from ._namespace import ENCRYPTED_SUFFIX
from ._probe import SALT_SIZE, read_salt
from ._sqlcipher_rekey import export_rekeyed

__all__ = [
    "TEMP_SUFFIX",
    "RekeyPlan",
    "migrate_legacy_files",
    "plan_rekey",
    "reencrypt_file",
    "rekey_files",
    "remove_temporaries",
]

log = logging.getLogger("fame.storage")

TEMP_SUFFIX = ".rekey-tmp"
"""The copy being written; its name never ends like a database file's."""
# SQLite's lock bytes (os_unix.c): every connection that has the file open
# for reading or writing holds a POSIX lock on part of this range.
_SHARED_FIRST = 0x40000000 + 2
_SHARED_SIZE = 510


def encrypted_files(directory: Path) -> list[Path]:
    """The encrypted database files of ``directory``, by name."""
    return sorted(p for p in directory.iterdir() if p.name.endswith(ENCRYPTED_SUFFIX))


def remove_temporaries(directory: Path) -> list[str]:
    """Delete copies a killed re-encryption left (the originals are whole); their names."""
    removed = [p.name for p in directory.iterdir() if TEMP_SUFFIX in p.name]
    for name in removed:
        (directory / name).unlink(missing_ok=True)
    if removed:
        _fsync_directory(directory)
    return removed


def reencrypt_file(path: Path, key: bytes, new_key: bytes) -> int:
    """Replace ``path`` (opened with ``key``) by a copy under ``new_key``; the copy's size.

    See the module docstring for why a crash at any point leaves a whole
    file under one of the two keys. Blocking.
    """
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    journal = temporary.with_name(temporary.name + "-journal")
    temporary.unlink(missing_ok=True)
    journal.unlink(missing_ok=True)
    try:
        export_rekeyed(path, key, temporary, new_key)
        wal = path.with_name(path.name + "-wal")
        if wal.exists():
            # Checkpointed in full above: an empty -wal is safe to drop, one
            # with frames would be replayed over the new file.
            if wal.stat().st_size:
                raise StorageError(f"{wal} still holds frames after a full checkpoint; kept")
            wal.unlink()
        # The copy's journal was committed; a leftover one is not hot.
        journal.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_RDONLY)
        try:
            os.fchmod(fd, 0o600)
            os.fsync(fd)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        journal.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)
    return size


def migrate_legacy_files(directory: Path, master: MasterKey) -> list[str]:
    """Re-encrypt every v1 file of ``directory`` under the salted v2 scheme; their names.

    Called by the provider when it opens the directory, before any file is
    used. A file that cannot be migrated now (a full disk) stays a v1 file,
    which still opens, and is tried again at the next start; a file held
    by another process raises :class:`DatabaseInUse`.
    """
    remove_temporaries(directory)
    migrated = []
    for path in encrypted_files(directory):
        found = find_file_key(master, path)
        if found.version != 1:
            continue
        new_key = salted_file_key(master, path.name, secrets.token_bytes(SALT_SIZE))
        try:
            reencrypt_file(path, found.key, new_key)
        except DatabaseInUse:
            raise
        except (StorageError, OSError) as exc:
            log.warning("%s: kept under the v1 key scheme, migration failed: %s", path, exc)
            continue
        migrated.append(path.name)
    return migrated


@attrs.frozen
class RekeyPlan:
    """What ``fame rekey`` still has to do in one directory."""

    directory: Path
    todo: list[Path]
    done: list[Path]
    """Already under the new key (a previous run), or empty (no key yet)."""

    @property
    def bytes_todo(self) -> int:
        return sum(p.stat().st_size for p in self.todo)


def plan_rekey(directory: Path, old: MasterKey, new: MasterKey) -> RekeyPlan:
    """Check ``directory`` without changing a byte: which files still need the new key.

    Raises :class:`DatabaseInUse` if a process (a running node) holds a
    file, :class:`WrongMasterKey` if no file opens with either key,
    :class:`DamagedDatabase` for a file that opens with neither while
    others do. Copies a killed run left are removed afterwards.
    """
    todo, done, lost = [], [], []
    for path in encrypted_files(directory):
        if read_salt(path) is None:
            done.append(path)  # never written: it takes the key it is first opened with
            continue
        if find_file_key(new, path).verified:
            done.append(path)
        elif find_file_key(old, path).verified:
            todo.append(path)
        else:
            lost.append(path)
            continue
        if held_by_another_process(path):
            raise DatabaseInUse(str(path))
    if lost:
        if not todo and not done:
            raise WrongMasterKey(str(directory), lost[0].name)
        raise DamagedDatabase(
            str(lost[0]), "page 1 authenticates with neither the current nor the new master key"
        )
    remove_temporaries(directory)
    return RekeyPlan(directory, todo, done)


def rekey_files(
    plan: RekeyPlan, old: MasterKey, new: MasterKey, progress: Callable[[Path, int], None]
) -> int:
    """Re-encrypt the files of ``plan`` under ``new``; the bytes written. ``progress`` per file."""
    total = 0
    for path in plan.todo:
        found = find_file_key(new, path)
        if found.verified:  # done by a run that was stopped after the plan was made
            continue
        found = find_file_key(old, path)
        if not found.verified:
            raise DamagedDatabase(str(path), "page 1 no longer authenticates with the master key")
        new_key = salted_file_key(new, path.name, secrets.token_bytes(SALT_SIZE))
        size = reencrypt_file(path, found.key, new_key)
        total += size
        progress(path, size)
    return total


def held_by_another_process(path: Path) -> bool:
    """Whether a process has ``path`` open through SQLite (a running node does).

    Asks for a write lock on SQLite's shared-lock range without waiting and
    gives it back at once: nothing is read or written, unlike opening the
    file, which would replay and checkpoint a ``-wal``. POSIX locks belong
    to the process, so this must not be asked while this process has the
    file open in SQLite (closing ``fd`` would drop that connection's locks).
    """
    fd = os.open(path, os.O_RDWR)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, _SHARED_SIZE, _SHARED_FIRST)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, _SHARED_SIZE, _SHARED_FIRST)
        return False
    finally:
        os.close(fd)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
