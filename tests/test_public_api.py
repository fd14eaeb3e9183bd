"""The public API: exactly these names, all importable.

When a new public name is added to ``fame/__init__.py``, add it here too:
the list is a literal on purpose, so that any change to the API is a
deliberate, reviewed change.
"""

from __future__ import annotations

import importlib

import fame

EXPECTED = [
    "Actor",
    "ActorCrashed",
    "ActorRef",
    "Address",
    "AddressError",
    "AdmissionRefused",
    "AgentNotStarted",
    "BaseAgent",
    "DamagedDatabase",
    "DatabaseInUse",
    "DeadlineExceeded",
    "Delivery",
    "EncryptionMismatch",
    "FameError",
    "InvalidArguments",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "KeyValueStore",
    "MailboxFull",
    "NoRoute",
    "Node",
    "NodeClosed",
    "OperationFailed",
    "ProtocolError",
    "Proxy",
    "RecordInvalid",
    "RemoteError",
    "RestartPolicy",
    "Sentinel",
    "SentinelConfigError",
    "SentinelUnreachable",
    "StorageActor",
    "StorageConfig",
    "StorageConfigError",
    "StorageError",
    "StorageFull",
    "StorageProvider",
    "StorageProviderFactory",
    "StorageWriteFailed",
    "Stream",
    "Supervisor",
    "SupervisorGaveUp",
    "UnknownOperation",
    "VersionConflict",
    "Versioned",
    "WireError",
    "WrongMasterKey",
    "attach",
    "client_ssl_context",
    "connect",
    "open_node",
    "open_sentinel",
    "open_storage",
    "open_storage_from_env",
    "open_supervisor",
    "operation",
    "serve_sentinel",
    "server_ssl_context",
    "storage_config_from_env",
]


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(fame.__all__) == EXPECTED
    assert len(set(fame.__all__)) == len(fame.__all__)


def test_every_public_name_is_importable() -> None:
    module = importlib.import_module("fame")
    namespace: dict[str, object] = {}
    exec("from fame import *", namespace)
    for name in EXPECTED:
        assert getattr(module, name) is namespace[name]
        assert not name.startswith("_")


def test_every_public_exception_is_a_fame_error() -> None:
    exceptions = [
        obj
        for obj in (getattr(fame, name) for name in EXPECTED)
        if isinstance(obj, type) and issubclass(obj, BaseException)
    ]
    assert len(exceptions) == 31
    for exception in exceptions:
        assert issubclass(exception, fame.FameError), exception


def test_version_is_a_string() -> None:
    assert isinstance(fame.__version__, str)
    assert fame.__version__.count(".") == 2
