"""fame: an actor runtime for Python on Trio.

Supervised nodes of actors with bounded mailboxes; agents whose
``@operation`` methods are called by message, in-process or across a
websocket fabric; encrypted, message-passed key-value storage.

Everything importable from here is public API; modules whose names start
with an underscore are private.
"""

from ._agents._agent import BaseAgent
from ._agents._node import Node, open_node
from ._agents._operation import operation
from ._agents._proxy import Proxy
from ._agents._stream import Stream
from ._core._actor import Actor, ActorRef, Delivery
from ._core._address import Address, AddressError
from ._core._errors import (
    ActorCrashed,
    AdmissionRefused,
    AgentNotStarted,
    DeadlineExceeded,
    FameError,
    InvalidArguments,
    MailboxFull,
    NodeClosed,
    NoRoute,
    OperationFailed,
    ProtocolError,
    RemoteError,
    SupervisorGaveUp,
    UnknownOperation,
    WireError,
)
from ._core._supervisor import RestartPolicy, Supervisor, open_supervisor
from ._fabric._client import connect
from ._fabric._transport import SentinelUnreachable, client_ssl_context, server_ssl_context
from ._fabric._uplink import attach
from ._fabric.sentinel._server import Sentinel, SentinelConfigError, open_sentinel, serve_sentinel
from ._storage import (
    DamagedDatabase,
    DatabaseInUse,
    EncryptionMismatch,
    InvalidKey,
    InvalidNamespace,
    KeyMissing,
    KeyValueStore,
    RecordInvalid,
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
    storage_config_from_env,
)

__version__ = "0.1.0"

__all__ = [
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
