"""A backup of a stopped node's directory, made by opening it as the node would.

The same path as a running node's backup (each file's storage actor copies
it, see ``_backup``): the provider is opened on the directory, which takes
every file's exclusive lock, so a node that runs makes it fail with
:class:`DatabaseInUse` instead of copying a file being written.
"""

from __future__ import annotations

from pathlib import Path

from ._backup_manifest import BackupManifest
from ._builtin import BuiltinStorageProvider
from ._config import StorageConfig
from ._errors import StorageError
from ._provider import open_storage

__all__ = ["backup_storage"]


async def backup_storage(config: StorageConfig, destination: Path) -> BackupManifest:
    """Back up the directory of ``config`` into the new directory ``destination``."""
    async with open_storage(config, purge_interval=3600) as provider:
        if not isinstance(provider, BuiltinStorageProvider):
            raise StorageError(f"storage provider {config.profile!r} cannot make backups")
        return await provider.backup(destination)
