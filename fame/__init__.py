"""fame: an actor runtime for Python on Trio.

Supervised nodes of actors with bounded mailboxes; agents whose
``@operation`` methods are called by message, in-process or across a
websocket fabric; encrypted, message-passed key-value storage.

This module holds what an embedding program needs: open a node, define
agents, call them, join or serve a fabric, and the common errors. The rest
of the public API lives in public sub-modules: :mod:`fame.errors` (every
exception), :mod:`fame.storage` (the storage API) and :mod:`fame.lowlevel`
(actors, supervisors, the sentinel server, TLS contexts). Modules whose
names start with an underscore are private.
"""

from . import errors as errors
from . import lowlevel as lowlevel
from . import security as security
from . import storage as storage
from ._agents._agent import BaseAgent
from ._agents._node import Node, open_node
from ._agents._node import set_default_storage as _set_default_storage
from ._agents._operation import operation
from ._agents._proxy import Proxy
from ._agents._stream import Stream
from ._core._errors import (
    ActorCrashed,
    AdmissionRefused,
    DeadlineExceeded,
    FameError,
    InvalidArguments,
    NoRoute,
    OperationFailed,
    RemoteError,
    UnknownOperation,
)
from ._core._supervisor import RestartPolicy
from ._fabric._client import connect
from ._fabric._transport import SentinelUnreachable
from ._fabric._uplink import attach
from ._fabric.sentinel._server import open_sentinel

# The composition root: the agents layer cannot import storage, so the public
# package tells open_node() what to open when it is given no provider.
_set_default_storage(lambda: storage.open_storage(storage.StorageConfig()))

__version__ = "0.1.0"

__all__ = [
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
