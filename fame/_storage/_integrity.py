"""Offline integrity checks of a storage directory (``fame check``).

Every database file of the configured profile gets SQLCipher's page
authentication (``cipher_integrity_check``, encrypted profile) and SQLite's
structural check (``integrity_check``), read-only, with the key derived
for that file. The checks run on a private copy of the directory's files
(see ``_snapshot``), so no file of the directory is changed and a ``-wal``
a stopped node left behind is replayed into the copy and checked with it.
A file held by a running node raises :class:`DatabaseInUse`.
"""

from __future__ import annotations

import attrs

from ._config import StorageConfig
from ._keys import file_key
from ._namespace import namespace_files
from ._snapshot import snapshot_directory, wal_path
from ._sqlcipher_backend import integrity_check

__all__ = ["FileCheck", "check_files"]


@attrs.frozen
class FileCheck:
    """The verdict on one database file: ``problems`` is empty when it is sound.

    ``has_wal``: the file had a non-empty ``-wal``, which was replayed into
    the copy that was checked (its transactions are part of the verdict).
    """

    namespace: str
    file_name: str
    problems: list[str]
    has_wal: bool

    @property
    def ok(self) -> bool:
        return not self.problems


def check_files(config: StorageConfig) -> list[FileCheck]:
    """Check every database file of ``config``'s profile in its directory, by name."""
    if config.profile not in ("sqlite", "encrypted-sqlite") or config.directory is None:
        raise ValueError(f"profile {config.profile!r} keeps no database files to check")
    encrypted = config.profile == "encrypted-sqlite"
    files = namespace_files(config.directory, encrypted=encrypted)
    checks = []
    with snapshot_directory(path for _, path in files) as copies:
        for namespace, path in files:
            copy = copies / path.name
            key = None
            if encrypted:
                assert config.master_key is not None
                key = file_key(config.master_key, copy)
            has_wal = wal_path(copy).exists()  # copied only when not empty
            checks.append(
                FileCheck(
                    namespace=namespace,
                    file_name=path.name,
                    problems=integrity_check(copy, key),
                    has_wal=has_wal,
                )
            )
    return checks
