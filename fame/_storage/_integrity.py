"""Offline integrity checks of a storage directory (``fame check``).

Every database file of the configured profile gets SQLCipher's page
authentication (``cipher_integrity_check``, encrypted profile) and SQLite's
structural check (``integrity_check``), read-only, with the key derived
for that file. Nothing is opened for writing and no file is changed.
"""

from __future__ import annotations

import attrs

from ._config import StorageConfig
from ._keys import file_key
from ._namespace import namespace_files
from ._sqlcipher_backend import integrity_check

__all__ = ["FileCheck", "check_files"]


@attrs.frozen
class FileCheck:
    """The verdict on one database file: ``problems`` is empty when it is sound."""

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
    checks = []
    for namespace, path in namespace_files(config.directory, encrypted=encrypted):
        key = None
        if encrypted:
            assert config.master_key is not None
            key = file_key(config.master_key, path)
        wal = path.with_name(path.name + "-wal")
        checks.append(
            FileCheck(
                namespace=namespace,
                file_name=path.name,
                problems=integrity_check(path, key),
                has_wal=wal.exists() and wal.stat().st_size > 0,
            )
        )
    return checks
