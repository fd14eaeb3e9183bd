"""Backups of a storage directory: make, verify, restore.

A backup is a directory holding a consistent copy of every database file
(made by each file's storage actor with SQLite's online backup API, see
``_sqlcipher_backup``) and ``fame-backup.json`` (see ``_backup_manifest``).
It is built in a hidden sibling directory, ``.<name>.partial``, and renamed
to its name once the manifest is written, so the name either does not
exist or holds a complete backup; an interrupted run leaves only the
``.partial`` directory, which the next run replaces.

Restoring verifies the backup first (every file's size and SHA-256 against
the manifest, then the same page and structure checks as ``fame check``),
refuses while any file of the data directory is held by a running process,
copies the files into a hidden sibling, fsyncs, then moves the data
directory aside (``<dir>.before-restore-<time>``, never deleted) and the
copy into place.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import attrs

from ._backup_manifest import (
    BackupManifest,
    fsync_directory,
    fsync_file,
    read_manifest,
    sha256_of,
    write_manifest,
)
from ._config import StorageConfig
from ._errors import BackupInvalid, BackupRefused, DatabaseInUse, StorageError, WrongMasterKey
from ._file_lock import files_in_use
from ._integrity import check_files
from ._keys import MasterKey
from ._namespace import namespace_files

__all__ = [
    "BackupInvalid",
    "BackupRefused",
    "Restored",
    "begin_backup",
    "finish_backup",
    "restore_backup",
    "verify_backup",
]


def _partial(destination: Path) -> Path:
    return destination.with_name(f".{destination.name}.partial")


def begin_backup(destination: Path) -> Path:
    """Check ``destination`` and make the directory the backup is built in; blocking."""
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise BackupRefused(
            f"{destination} already exists and is not an empty directory: back up into a new one"
        )
    partial = _partial(destination)
    if partial.exists():
        shutil.rmtree(partial)  # an interrupted backup of the same name
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial.mkdir(mode=0o700)
    return partial


def finish_backup(partial: Path, destination: Path, manifest: BackupManifest) -> None:
    """Write the manifest last, then give the backup its name; blocking."""
    write_manifest(partial, manifest)
    if destination.is_dir():
        destination.rmdir()  # empty, checked by begin_backup
    os.rename(partial, destination)
    fsync_directory(destination.parent)


def verify_backup(directory: Path, profile: str, master_key: MasterKey | None) -> BackupManifest:
    """The manifest of the backup in ``directory`` once every file checks out; blocking.

    Raises :class:`BackupInvalid` (or :class:`WrongMasterKey`) saying what
    does not.
    """
    where = str(directory)
    try:
        manifest = read_manifest(directory)
    except (ValueError, OSError) as exc:
        raise BackupInvalid(where, str(exc)) from None
    if manifest.profile != profile:
        raise BackupInvalid(
            where, f"it was made from a {manifest.profile!r} directory, not {profile!r}"
        )
    encrypted = profile == "encrypted-sqlite"
    present = {path.name for _, path in namespace_files(directory, encrypted=encrypted)}
    listed = {f.name for f in manifest.files}
    if present != listed:
        missing, extra = sorted(listed - present), sorted(present - listed)
        raise BackupInvalid(
            where, f"files missing: {missing or 'none'}, not listed: {extra or 'none'}"
        )
    for copy in manifest.files:
        path = directory / copy.name
        if path.stat().st_size != copy.bytes or sha256_of(path) != copy.sha256:
            raise BackupInvalid(where, f"{copy.name} changed since the backup was made")
    checks = check_files(StorageConfig(profile=profile, directory=directory, master_key=master_key))
    bad = [check for check in checks if not check.ok]
    if encrypted and checks and len(bad) == len(checks):
        raise WrongMasterKey(where, bad[0].file_name)
    if bad:
        raise BackupInvalid(
            where, f"{bad[0].file_name} fails its integrity check: {'; '.join(bad[0].problems[:3])}"
        )
    return manifest


@attrs.frozen
class Restored:
    """What a restore did: the backup put in place, and where the old directory was kept."""

    manifest: BackupManifest
    kept: Path | None


def restore_backup(
    backup: Path, data: Path, profile: str, master_key: MasterKey | None
) -> Restored:
    """Put the backup in ``backup`` in place of the directory ``data``; blocking."""
    manifest = verify_backup(backup, profile, master_key)
    held = files_in_use(data)
    if held:
        raise DatabaseInUse(str(held[0]))
    staging = data.with_name(f".{data.name}.restoring")
    if staging.exists():
        shutil.rmtree(staging)  # an interrupted restore
    data.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir(mode=0o700)
    for copy in manifest.files:
        target = staging / copy.name
        shutil.copyfile(backup / copy.name, target)
        os.chmod(target, 0o600)
        fsync_file(target)
        if sha256_of(target) != copy.sha256:
            raise StorageError(f"copying {copy.name} into {staging} changed it: disk error?")
    fsync_directory(staging)
    kept = None
    if data.exists():
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        kept = data.with_name(f"{data.name}.before-restore-{stamp}")
        n = 1
        while kept.exists():  # two restores within a second: keep both
            n += 1
            kept = data.with_name(f"{data.name}.before-restore-{stamp}-{n}")
        os.rename(data, kept)
    os.rename(staging, data)
    fsync_directory(data.parent)
    return Restored(manifest, kept)
