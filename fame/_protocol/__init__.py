"""Sans-IO state machines of the fabric link: the attach handshake and binding.

Both ends of a link are plain objects: feed them the frames the peer sent,
get back the frames to send and the events that happened. No sockets, no
clocks, no trio: the websocket layer (``fame._fabric._uplink``, ``fame._fabric.sentinel._server``)
only moves bytes, and every protocol rule is tested without a network.

The attach handshake::

    sentinel                                  node
       | -- Challenge(nonce, sentinel_id, v) --> |   v: PROTOCOL_VERSION
       | <-- Attach(node_id, key, token, sig,    |   sig = Ed25519(proof payload)
       |            ephemeral, v) -------------- |
       | -- Welcome(node_id, path) ------------> |   or Refused(reason), then close
       | <-- Bind(addresses) ------------------- |
       | -- Bound(a) / BindRefused(a, why) ----> |   one per address

Either end that sees another version refuses (the sentinel with a
``Refused`` naming both versions, the node with ``ProtocolMismatch``)
before anything else is checked or sent.

After ``Welcome`` envelopes flow both ways; ``Bind`` / ``Unbind`` and
``Ping`` / ``Pong`` may come at any time.
"""

from ._attach import (
    Admitted,
    BindDenied,
    RoutesChanged,
    SentinelLink,
    SentinelPolicy,
)
from ._binding_tracker import BindingTracker
from ._node_handshake import NodeHandshake

__all__ = [
    "Admitted",
    "BindDenied",
    "BindingTracker",
    "NodeHandshake",
    "RoutesChanged",
    "SentinelLink",
    "SentinelPolicy",
]
