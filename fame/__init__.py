"""fame: an actor runtime for Python on Trio.

Supervised nodes of actors with bounded mailboxes; agents whose
``@operation`` methods are called by message, in-process or across a
websocket fabric; encrypted, message-passed key-value storage.

Everything importable from here is public API; modules whose names start
with an underscore are private.
"""

from ._actor import Actor, ActorRef, Delivery
from ._address import Address, AddressError
from ._agent import BaseAgent
from ._errors import (
    ActorCrashed,
    AdmissionRefused,
    AgentNotStarted,
    DeadlineExceeded,
    FameError,
    InvalidArguments,
    MailboxFull,
    NoRoute,
    NodeClosed,
    OperationFailed,
    ProtocolError,
    RemoteError,
    SupervisorGaveUp,
    UnknownOperation,
    WireError,
)
from ._node import Node, Proxy, Stream, open_node
from ._operation import operation
from ._supervisor import RestartPolicy, Supervisor, open_supervisor

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
    "DeadlineExceeded",
    "Delivery",
    "FameError",
    "InvalidArguments",
    "MailboxFull",
    "NoRoute",
    "Node",
    "NodeClosed",
    "OperationFailed",
    "ProtocolError",
    "Proxy",
    "RemoteError",
    "RestartPolicy",
    "Stream",
    "Supervisor",
    "SupervisorGaveUp",
    "UnknownOperation",
    "WireError",
    "open_node",
    "open_supervisor",
    "operation",
]
