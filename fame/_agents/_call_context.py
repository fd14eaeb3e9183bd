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

__all__ = ["CALL", "CallerIdentity", "current_caller", "enter_call", "leave_call", "request_key"]

LOCAL_PRINCIPAL = "local"
"""The scope of request ids of calls from inside the node (no verified remote caller)."""


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


CALL: ContextVar[tuple[CallerIdentity | None, str | None]] = ContextVar(
    "fame_caller", default=(None, None)
)
"""The running call's verified caller and request id; ``(None, request id)`` for a local call.

Set and reset through it directly by the agent's hot path; elsewhere
through :func:`enter_call` and :func:`leave_call`.
"""


def current_caller() -> CallerIdentity | None:
    """The verified caller of the operation running in this task; None for a local call."""
    return CALL.get()[0]


def request_key() -> str | None:
    """The running call's request id, scoped by its verified caller; None if it has none.

    Deduplicate a write by it (``store.set(..., request_id=fame.security.request_key())``):
    the runtime sends a call again with the same request id after a lost
    answer, and the caller chooses it (``proxy.with_request_id``), so the
    retry must apply once and get the original answer. The key starts
    with the caller's principal as the sentinel verified it (``local`` for
    a call from inside this node), length-prefixed, so one principal's ids
    can never match another's: no client can block or replay another's
    writes by guessing or reusing its ids.
    """
    identity, request_id = CALL.get()
    if request_id is None:
        return None
    principal = LOCAL_PRINCIPAL if identity is None else identity.principal
    return f"{len(principal)}:{principal}:{request_id}"


def enter_call(
    caller: str | None, reply_to: str | None, request_id: str | None = None
) -> Token[tuple[CallerIdentity | None, str | None]]:
    """Make ``caller`` (an envelope's) the current caller; give the token to :func:`leave_call`."""
    identity = None
    if caller is not None:
        node_id = None
        if reply_to is not None and reply_to.startswith(REPLY_NAME + "@"):
            node_id = reply_to.partition("@")[2] or None
        identity = CallerIdentity(caller, node_id)
    return CALL.set((identity, request_id))


def leave_call(token: Token[tuple[CallerIdentity | None, str | None]]) -> None:
    CALL.reset(token)
