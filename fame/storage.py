"""Encrypted, message-passed key-value storage: the public storage API.

A node gets its storage from a :class:`StorageProvider` (``open_node``
takes one); :func:`open_storage` opens the built-in provider for a
:class:`StorageConfig`, and agents get a typed :class:`KeyValueStore` per
namespace from it. :func:`check_files` and :func:`namespace_files` inspect a
storage directory offline (``fame check``, ``fame inspect``), on private
copies made by :func:`snapshot_directory` / :func:`open_snapshot`;
:func:`plan_rekey` and :func:`rekey_files` re-encrypt one under a new
master key (``fame rekey``);
:func:`migrate_namespace` upgrades a namespace to its model's version
(``fame migrate``);
:func:`salvage_namespace` copies the readable records of a damaged file
(``fame salvage``). See
``docs/storage.md``.
:func:`backup_storage`, :func:`restore_backup`, :func:`export_namespace` and
:func:`import_namespace` back up, restore and move one (``fame backup``,
``restore``, ``export``, ``import``). See ``docs/storage.md``.
"""

from typing import TYPE_CHECKING

from ._lazy import exports

if TYPE_CHECKING:
    from ._storage import (
        ENTRY_POINT_GROUP,
        BackupInvalid,
        BackupRefused,
        DamagedDatabase,
        DatabaseInUse,
        EncryptionMismatch,
        InvalidKey,
        InvalidNamespace,
        KeyMissing,
        KeyValueStore,
        MasterKey,
        RecordInvalid,
        RecordTooNew,
        StorageActor,
        StorageConfig,
        StorageConfigError,
        StorageError,
        StorageFull,
        StorageProvider,
        StorageProviderFactory,
        StorageWriteFailed,
        VersionConflict,
        Versioned,
        WrongMasterKey,
        open_storage,
        open_storage_from_env,
        parse_master_key,
        storage_config_from_env,
    )
    from ._storage._backup import Restored, restore_backup, verify_backup
    from ._storage._backup_manifest import BackupManifest, FileCopy
    from ._storage._export import ExportedRecord, export_namespace, import_namespace
    from ._storage._file_lock import files_in_use
    from ._storage._integrity import FileCheck, check_files
    from ._storage._migrate import DEFAULT_BATCH as DEFAULT_MIGRATION_BATCH
    from ._storage._migrate import MigrationProgress, migrate_namespace
    from ._storage._namespace import namespace_files
    from ._storage._offline_backup import backup_storage
    from ._storage._rekey import RekeyPlan, plan_rekey, rekey_files
    from ._storage._salvage import LostRange, SalvageReport, salvage_namespace
    from ._storage._snapshot import open_snapshot, snapshot_directory

__all__ = [
    "DEFAULT_MIGRATION_BATCH",
    "ENTRY_POINT_GROUP",
    "BackupInvalid",
    "BackupManifest",
    "BackupRefused",
    "DamagedDatabase",
    "DatabaseInUse",
    "EncryptionMismatch",
    "ExportedRecord",
    "FileCheck",
    "FileCopy",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "KeyValueStore",
    "LostRange",
    "MasterKey",
    "MigrationProgress",
    "RecordInvalid",
    "RecordTooNew",
    "RekeyPlan",
    "Restored",
    "SalvageReport",
    "StorageActor",
    "StorageConfig",
    "StorageConfigError",
    "StorageError",
    "StorageFull",
    "StorageProvider",
    "StorageProviderFactory",
    "StorageWriteFailed",
    "VersionConflict",
    "Versioned",
    "WrongMasterKey",
    "backup_storage",
    "check_files",
    "export_namespace",
    "files_in_use",
    "import_namespace",
    "migrate_namespace",
    "namespace_files",
    "open_snapshot",
    "open_storage",
    "open_storage_from_env",
    "parse_master_key",
    "plan_rekey",
    "rekey_files",
    "restore_backup",
    "salvage_namespace",
    "snapshot_directory",
    "storage_config_from_env",
    "verify_backup",
]

_NAMES = {
    "ENTRY_POINT_GROUP": "fame._storage",
    "BackupInvalid": "fame._storage",
    "BackupRefused": "fame._storage",
    "DamagedDatabase": "fame._storage",
    "DatabaseInUse": "fame._storage",
    "EncryptionMismatch": "fame._storage",
    "InvalidKey": "fame._storage",
    "InvalidNamespace": "fame._storage",
    "KeyMissing": "fame._storage",
    "KeyValueStore": "fame._storage",
    "MasterKey": "fame._storage",
    "RecordInvalid": "fame._storage",
    "RecordTooNew": "fame._storage",
    "StorageActor": "fame._storage",
    "StorageConfig": "fame._storage",
    "StorageConfigError": "fame._storage",
    "StorageError": "fame._storage",
    "StorageFull": "fame._storage",
    "StorageProvider": "fame._storage",
    "StorageProviderFactory": "fame._storage",
    "StorageWriteFailed": "fame._storage",
    "VersionConflict": "fame._storage",
    "Versioned": "fame._storage",
    "WrongMasterKey": "fame._storage",
    "open_storage": "fame._storage",
    "open_storage_from_env": "fame._storage",
    "parse_master_key": "fame._storage",
    "storage_config_from_env": "fame._storage",
    "Restored": "fame._storage._backup",
    "restore_backup": "fame._storage._backup",
    "verify_backup": "fame._storage._backup",
    "BackupManifest": "fame._storage._backup_manifest",
    "FileCopy": "fame._storage._backup_manifest",
    "ExportedRecord": "fame._storage._export",
    "export_namespace": "fame._storage._export",
    "import_namespace": "fame._storage._export",
    "files_in_use": "fame._storage._file_lock",
    "FileCheck": "fame._storage._integrity",
    "check_files": "fame._storage._integrity",
    "DEFAULT_MIGRATION_BATCH": "fame._storage._migrate:DEFAULT_BATCH",
    "MigrationProgress": "fame._storage._migrate",
    "migrate_namespace": "fame._storage._migrate",
    "namespace_files": "fame._storage._namespace",
    "backup_storage": "fame._storage._offline_backup",
    "RekeyPlan": "fame._storage._rekey",
    "plan_rekey": "fame._storage._rekey",
    "rekey_files": "fame._storage._rekey",
    "LostRange": "fame._storage._salvage",
    "SalvageReport": "fame._storage._salvage",
    "salvage_namespace": "fame._storage._salvage",
    "open_snapshot": "fame._storage._snapshot",
    "snapshot_directory": "fame._storage._snapshot",
}
"""Where each name lives: imported on first use (see :mod:`fame._lazy`)."""

if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, _NAMES)
