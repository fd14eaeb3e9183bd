"""Encrypted, message-passed key-value storage.

Agents get a typed :class:`KeyValueStore` per namespace from the node's
:class:`StorageProvider`; each namespace is one database file owned by one
:class:`StorageActor`. See ``docs/storage.md``.
"""

from ._builtin import BuiltinStorageProvider
from ._config import StorageConfig, storage_config_from_env
from ._errors import (
    BackupInvalid,
    BackupRefused,
    DamagedDatabase,
    DatabaseInUse,
    EncryptionMismatch,
    InvalidKey,
    InvalidNamespace,
    KeyMissing,
    RecordInvalid,
    RecordTooNew,
    StorageConfigError,
    StorageError,
    StorageFull,
    StorageWriteFailed,
    VersionConflict,
    WrongMasterKey,
)
from ._keys import MasterKey, parse_master_key
from ._kv import KeyValueStore, Versioned
from ._provider import (
    ENTRY_POINT_GROUP,
    StorageProvider,
    StorageProviderFactory,
    open_storage,
    open_storage_from_env,
    resolve_provider,
)
from ._storage_actor import StorageActor

__all__ = [
    "ENTRY_POINT_GROUP",
    "BackupInvalid",
    "BackupRefused",
    "BuiltinStorageProvider",
    "DamagedDatabase",
    "DatabaseInUse",
    "EncryptionMismatch",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "KeyValueStore",
    "MasterKey",
    "RecordInvalid",
    "RecordTooNew",
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
    "open_storage",
    "open_storage_from_env",
    "parse_master_key",
    "resolve_provider",
    "storage_config_from_env",
]
