"""The public API: exactly these names, in exactly these modules, all importable.

The top level holds what an embedding program needs; the rest lives in the
public sub-modules ``fame.errors`` (every exception), ``fame.storage`` and
``fame.lowlevel``. When a public name is added or moved, change the lists
here too: they are literals on purpose, so that any change to the API is a
deliberate, reviewed change.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import fame

TOP_LEVEL = [
    "ActorCrashed",
    "AdmissionRefused",
    "BaseAgent",
    "DeadlineExceeded",
    "FameError",
    "InvalidArguments",
    "NoRoute",
    "Node",
    "OperationFailed",
    "Proxy",
    "RemoteError",
    "RestartPolicy",
    "SentinelUnreachable",
    "Stream",
    "UnknownOperation",
    "attach",
    "connect",
    "open_node",
    "open_sentinel",
    "operation",
]

STORAGE_ERRORS = [
    "BackupInvalid",
    "BackupRefused",
    "DamagedDatabase",
    "DatabaseInUse",
    "EncryptionMismatch",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "RecordInvalid",
    "RecordTooNew",
    "StorageConfigError",
    "StorageError",
    "StorageFull",
    "StorageWriteFailed",
    "VersionConflict",
    "WrongMasterKey",
]

SUBMODULES = {
    "fame.errors": sorted(
        [
            "ActorCrashed",
            "AdminRefused",
            "AddressError",
            "AdmissionRefused",
            "AgentNotStarted",
            "DeadlineExceeded",
            "FameError",
            "InvalidArguments",
            "MailboxFull",
            "NoAnswerInTime",
            "NoRoute",
            "NodeClosed",
            "NotApplied",
            "NotSentInTime",
            "OperationFailed",
            "OutboxFull",
            "DeadLetterNotFound",
            "OutcomeUnknown",
            "Overloaded",
            "PermissionDenied",
            "PolicyError",
            "ProtocolError",
            "ProtocolMismatch",
            "QuotaExceeded",
            "RegistryError",
            "RemoteError",
            "RequestLost",
            "SentinelConfigError",
            "SentinelUnreachable",
            "StateConflict",
            "SupervisorGaveUp",
            "UnknownOperation",
            "UntrustedSentinel",
            "WireError",
            *STORAGE_ERRORS,
        ]
    ),
    "fame.storage": sorted(
        [
            "DEFAULT_MIGRATION_BATCH",
            "ENTRY_POINT_GROUP",
            "BackupManifest",
            "ExportedRecord",
            "FileCheck",
            "FileCopy",
            "KeyValueStore",
            "LostRange",
            "MasterKey",
            "RekeyPlan",
            "MigrationProgress",
            "Restored",
            "SalvageReport",
            "StorageActor",
            "StorageConfig",
            "StorageProvider",
            "StorageProviderFactory",
            "Versioned",
            "backup_storage",
            "check_files",
            "migrate_namespace",
            "export_namespace",
            "files_in_use",
            "import_namespace",
            "namespace_files",
            "open_snapshot",
            "open_storage",
            "open_storage_from_env",
            "parse_master_key",
            "restore_backup",
            "plan_rekey",
            "rekey_files",
            "salvage_namespace",
            "snapshot_directory",
            "storage_config_from_env",
            "verify_backup",
            *STORAGE_ERRORS,
        ]
    ),
    "fame.lowlevel": sorted(
        [
            "DEFAULT_HOST",
            "DEFAULT_IDLE_TIMEOUT",
            "DEFAULT_LINK_BUFFER",
            "DEFAULT_MAX_CONNECTIONS",
            "DEFAULT_PORT",
            "DEFAULT_STALL_GRACE",
            "DEFAULT_WINDOW",
            "HANDSHAKE_TIMEOUT",
            "QUOTA_SETTINGS",
            "SENTINEL_ADMIN_ADDRESS",
            "TRACE_LOGGER",
            "Actor",
            "ActorRef",
            "Address",
            "DeadLetters",
            "Delivery",
            "DeliveryConfig",
            "DoorLimits",
            "LinkLimits",
            "NodeAdmin",
            "NodeRegistry",
            "NodeStores",
            "OutboxEntry",
            "Quotas",
            "Sentinel",
            "SentinelStatus",
            "Supervisor",
            "client_ssl_context",
            "collapse",
            "leaves",
            "load_or_create_identity",
            "open_supervisor",
            "rotate_node_key",
            "rotate_sentinel_key",
            "sentinel_public_keys",
            "serve_sentinel",
            "server_ssl_context",
        ]
    ),
    "fame.security": sorted(
        [
            "CallerIdentity",
            "ClientCredential",
            "Policy",
            "PolicyError",
            "Principal",
            "current_caller",
            "default_policy_text",
            "format_public_key",
            "parse_public_key",
            "request_key",
        ]
    ),
}
PUBLIC_MODULES = {"fame": TOP_LEVEL, **SUBMODULES}


def test_the_top_level_is_small() -> None:
    assert sorted(fame.__all__) == TOP_LEVEL
    assert len(TOP_LEVEL) <= 20


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_all_is_exactly_the_public_api(name: str) -> None:
    module = importlib.import_module(name)
    assert sorted(module.__all__) == PUBLIC_MODULES[name]
    assert len(set(module.__all__)) == len(module.__all__)


@pytest.mark.parametrize("name", sorted(PUBLIC_MODULES))
def test_every_public_name_is_importable(name: str) -> None:
    module = importlib.import_module(name)
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    for public in PUBLIC_MODULES[name]:
        assert getattr(module, public) is namespace[public]
        assert not public.startswith("_")


def test_the_sub_modules_are_reachable_from_fame() -> None:
    for name in SUBMODULES:
        assert getattr(fame, name.removeprefix("fame.")) is importlib.import_module(name)


def test_a_name_exported_twice_is_the_same_object() -> None:
    seen: dict[str, object] = {}
    for name, names in PUBLIC_MODULES.items():
        module = importlib.import_module(name)
        for public in names:
            assert seen.setdefault(public, getattr(module, public)) is getattr(module, public)


def _exceptions(module: ModuleType) -> dict[str, type[BaseException]]:
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and not name.startswith("_")
    }


def test_every_public_exception_is_in_fame_errors_and_is_a_fame_error() -> None:
    errors = importlib.import_module("fame.errors")
    assert set(_exceptions(errors)) == set(errors.__all__)
    for name, exception in _exceptions(errors).items():
        assert issubclass(exception, fame.FameError), name
    for module_name, names in PUBLIC_MODULES.items():
        module = importlib.import_module(module_name)
        for name in names:
            obj = getattr(module, name)
            if inspect.isclass(obj) and issubclass(obj, BaseException):
                assert getattr(errors, name) is obj, (module_name, name)


def test_every_exception_the_library_defines_is_public() -> None:
    """A new error class in a private module must be exported by ``fame.errors``."""
    errors = importlib.import_module("fame.errors")
    exported = set(_exceptions(errors).values())
    missing = []
    for info in pkgutil.walk_packages(fame.__path__, "fame."):
        if info.name.startswith("fame._cli"):
            continue  # the command line's own errors never reach a library user
        module = importlib.import_module(info.name)
        for exception in _exceptions(module).values():
            if exception.__module__ == info.name and exception not in exported:
                missing.append(f"{info.name}.{exception.__name__}")
    assert missing == []


def test_the_package_is_typed() -> None:
    assert (Path(fame.__file__).parent / "py.typed").is_file()


def test_version_is_a_string() -> None:
    assert isinstance(fame.__version__, str)
    assert fame.__version__.count(".") == 2
