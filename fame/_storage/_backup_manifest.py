"""The manifest of a backup directory, ``fame-backup.json``, and durable file writes.

A backup directory holds a copy of every database file of a storage
directory and this manifest, written last: a directory without it is not a
backup. The manifest says when and from which profile the copy was made,
and for each file its name, namespace, size, SHA-256 and record count, so
``fame restore`` can tell a complete, unchanged backup from anything else
before it touches the data directory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import attrs
import msgspec

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "BackupManifest",
    "FileCopy",
    "fsync_directory",
    "fsync_file",
    "read_manifest",
    "sha256_of",
    "write_manifest",
]

MANIFEST_NAME = "fame-backup.json"
MANIFEST_FORMAT = "fame-backup/v1"
_CHUNK = 1 << 20


@attrs.frozen
class FileCopy:
    """One database file of a backup."""

    name: str
    namespace: str
    bytes: int
    sha256: str
    records: int


@attrs.frozen
class BackupManifest:
    """What ``fame-backup.json`` says: the files of a complete backup."""

    created_at: float
    profile: str
    files: tuple[FileCopy, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.bytes for f in self.files)


class _FileEntry(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    namespace: str
    bytes: int
    sha256: str
    records: int


class _Manifest(msgspec.Struct, forbid_unknown_fields=False):
    format: str
    created_at: float
    profile: str
    files: list[_FileEntry]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Make the names created or renamed in ``path`` durable."""
    fsync_file(path)


def write_manifest(directory: Path, manifest: BackupManifest) -> Path:
    """Write the manifest durably: a temporary name, fsync, rename, fsync the directory."""
    body = _Manifest(
        format=MANIFEST_FORMAT,
        created_at=manifest.created_at,
        profile=manifest.profile,
        files=[_FileEntry(**attrs.asdict(f)) for f in manifest.files],
    )
    final = directory / MANIFEST_NAME
    tmp = directory / (MANIFEST_NAME + ".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(body)) + b"\n")
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_directory(directory)
    return final


def read_manifest(directory: Path) -> BackupManifest:
    """The manifest of the backup in ``directory``; raises ``ValueError`` if unreadable."""
    path = directory / MANIFEST_NAME
    try:
        body = msgspec.json.decode(path.read_bytes(), type=_Manifest)
    except FileNotFoundError:
        raise ValueError(
            f"{directory} has no {MANIFEST_NAME}: it is not a backup, or its making was interrupted"
        ) from None
    except msgspec.DecodeError as exc:
        raise ValueError(f"{path} is not a fame backup manifest: {exc}") from None
    if body.format != MANIFEST_FORMAT:
        raise ValueError(f"{path} has format {body.format!r}, expected {MANIFEST_FORMAT!r}")
    files = tuple(FileCopy(**msgspec.structs.asdict(f)) for f in body.files)
    return BackupManifest(created_at=body.created_at, profile=body.profile, files=files)
