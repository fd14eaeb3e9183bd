"""Who called the operation that is running: :func:`fame.current_caller`.

The sentinel writes the verified principal of every request's sender into
the envelope (``Envelope.caller``) and refuses envelopes that carry one
from a peer, so an operation can trust it to make its own decisions (an
agent that lets each client see only its own records, say). The node id
comes from the request's reply address, which the sentinel checked too.

A call from inside the same node (an agent or the embedding program
calling through its own node) has no caller: :func:`current_caller`
returns None.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

import attrs

from .._core._address import REPLY_NAME

__all__ = ["CallerIdentity", "current_caller", "enter_call", "leave_call"]


@attrs.frozen
class CallerIdentity:
    """The verified identity of a remote caller.

    ``principal`` is what the authorization policy calls it:
    ``client:<credential name>``, ``node:<enrolled name>`` or
    ``sentinel:<id>``. ``node_id`` is the id of the node (or client) that
    sent the request.
    """

    principal: str
    node_id: str | None

    @property
    def kind(self) -> str:
        """``client``, ``node`` or ``sentinel``."""
        return self.principal.partition(":")[0]

    @property
    def name(self) -> str:
        """The credential's or the enrolled node's name."""
        return self.principal.partition(":")[2]


_current: ContextVar[CallerIdentity | None] = ContextVar("fame_caller", default=None)


def current_caller() -> CallerIdentity | None:
    """The verified caller of the operation running in this task; None for a local call."""
    return _current.get()


def enter_call(caller: str | None, reply_to: str | None) -> Token[CallerIdentity | None]:
    """Make ``caller`` (an envelope's) the current caller; give the token to :func:`leave_call`."""
    identity = None
    if caller is not None:
        node_id = None
        if reply_to is not None and reply_to.startswith(REPLY_NAME + "@"):
            node_id = reply_to.partition("@")[2] or None
        identity = CallerIdentity(caller, node_id)
    return _current.set(identity)


def leave_call(token: Token[CallerIdentity | None]) -> None:
    _current.reset(token)
