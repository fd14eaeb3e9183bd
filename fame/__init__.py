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

from typing import TYPE_CHECKING, Any

from ._core._default_storage import set_default_storage
from ._lazy import exports

if TYPE_CHECKING:
    from . import errors as errors
    from . import lowlevel as lowlevel
    from . import security as security
    from . import storage as storage
    from ._agents._agent import BaseAgent
    from ._agents._node import Node, open_node
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

_NAMES = {
    "errors": "fame.errors:",
    "lowlevel": "fame.lowlevel:",
    "security": "fame.security:",
    "storage": "fame.storage:",
    "BaseAgent": "fame._agents._agent",
    "Node": "fame._agents._node",
    "open_node": "fame._agents._node",
    "operation": "fame._agents._operation",
    "Proxy": "fame._agents._proxy",
    "Stream": "fame._agents._stream",
    "ActorCrashed": "fame._core._errors",
    "AdmissionRefused": "fame._core._errors",
    "DeadlineExceeded": "fame._core._errors",
    "FameError": "fame._core._errors",
    "InvalidArguments": "fame._core._errors",
    "NoRoute": "fame._core._errors",
    "OperationFailed": "fame._core._errors",
    "RemoteError": "fame._core._errors",
    "UnknownOperation": "fame._core._errors",
    "RestartPolicy": "fame._core._supervisor",
    "connect": "fame._fabric._client",
    "SentinelUnreachable": "fame._fabric._transport",
    "attach": "fame._fabric._uplink",
    "open_sentinel": "fame._fabric.sentinel._server",
}
"""Where each name lives: imported on first use (see :mod:`fame._lazy`)."""


def _open_default_storage() -> Any:
    """The in-memory provider, for a node given none (imported only then)."""
    from . import storage

    return storage.open_storage(storage.StorageConfig())


# The composition root: the agents layer cannot import storage, so the public
# package tells open_node() what to open when given no provider. Registered at
# import (the hook's module imports nothing), so it holds however a node is
# reached; the storage layer itself is imported only when a node needs it.
set_default_storage(_open_default_storage)


if not TYPE_CHECKING:
    __getattr__, __dir__ = exports(__name__, _NAMES)
