"""Every exception fame raises, in one place.

All of them derive from :class:`FameError`. Errors that come back from
another actor (local or remote) derive from :class:`RemoteError`; storage
errors from :class:`StorageError`. The most common ones are also exported
by :mod:`fame` itself.
"""

from ._agents._state import StateConflict
from ._core._address import AddressError
from ._core._errors import (
    ActorCrashed,
    AdmissionRefused,
    AgentNotStarted,
    DeadLetterNotFound,
    DeadlineExceeded,
    FameError,
    InvalidArguments,
    MailboxFull,
    NoAnswerInTime,
    NodeClosed,
    NoRoute,
    NotApplied,
    NotSentInTime,
    OperationFailed,
    OutboxFull,
    OutcomeUnknown,
    Overloaded,
    PermissionDenied,
    ProtocolError,
    ProtocolMismatch,
    QuotaExceeded,
    RemoteError,
    RequestLost,
    SupervisorGaveUp,
    UnknownOperation,
    UntrustedSentinel,
    WireError,
)
from ._fabric._transport import SentinelUnreachable
from ._fabric.sentinel._admin_agent import AdminRefused
from ._fabric.sentinel._registry import RegistryError
from ._fabric.sentinel._server import SentinelConfigError
from ._protocol._authz import PolicyError
from ._storage import (
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

__all__ = [
    "ActorCrashed",
    "AddressError",
    "AdminRefused",
    "AdmissionRefused",
    "AgentNotStarted",
    "DamagedDatabase",
    "DatabaseInUse",
    "DeadLetterNotFound",
    "DeadlineExceeded",
    "EncryptionMismatch",
    "FameError",
    "InvalidArguments",
    "InvalidKey",
    "InvalidNamespace",
    "KeyMissing",
    "MailboxFull",
    "NoAnswerInTime",
    "NoRoute",
    "NodeClosed",
    "NotApplied",
    "NotSentInTime",
    "OperationFailed",
    "OutboxFull",
    "OutcomeUnknown",
    "Overloaded",
    "PermissionDenied",
    "PolicyError",
    "ProtocolError",
    "ProtocolMismatch",
    "QuotaExceeded",
    "RecordInvalid",
    "RecordTooNew",
    "RegistryError",
    "RemoteError",
    "RequestLost",
    "SentinelConfigError",
    "SentinelUnreachable",
    "StateConflict",
    "StorageConfigError",
    "StorageError",
    "StorageFull",
    "StorageWriteFailed",
    "SupervisorGaveUp",
    "UnknownOperation",
    "UntrustedSentinel",
    "VersionConflict",
    "WireError",
    "WrongMasterKey",
]
